#!/usr/bin/env python3
"""An independent check of a Writ checkpoint and inclusion proof, sharing no code with Writ.

Written from the specifications only: C2SP signed-note (Ed25519 key ids and signature lines),
C2SP tlog-checkpoint (origin, size, base64 root), and RFC 9162 §2.1.3.2 (inclusion proof
verification). Uses the `cryptography` package for Ed25519.

usage: independent_verify.py VERIFIER_KEY NOTE_FILE ENTRY_LINE_FILE PROOF_JSON_FILE
Exits 0 and prints "ok" when everything verifies.
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def parse_verifier(text):
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        fail("verifier key must be name+hexid+base64key")
    name, key_id_hex, key_b64 = parts
    raw = base64.b64decode(key_b64, validate=True)
    if len(raw) != 33 or raw[0] != 0x01:
        fail("not an Ed25519 (type 0x01) verifier key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != key_id_hex:
        fail("key id does not match the key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_note(note, name, key_id, public_key):
    # A note is its text (ending in a newline), a blank line, then signature lines.
    if not note.endswith("\n"):
        fail("note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        fail("no blank line before the signatures")
    text, signatures = note[: split + 1], note[split + 2 :]
    verified = False
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "):
            fail("signature line does not start with an em dash: %r" % line)
        sig_name, sig_b64 = line[2:].split(" ")
        blob = base64.b64decode(sig_b64, validate=True)
        if sig_name == name and blob[:4] == key_id:
            public_key.verify(blob[4:], text.encode())  # raises on a bad signature
            verified = True
    if not verified:
        fail("no signature by the given key")
    return text


def parse_checkpoint(text):
    lines = text.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        fail("root hash is not 32 bytes")
    return origin, size, root


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, size, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not (fn & 1) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def main():
    key_text, note_file, entry_file, proof_file = sys.argv[1:5]
    name, key_id, public_key = parse_verifier(key_text)
    with open(note_file, encoding="utf-8") as f:
        text = open_note(f.read(), name, key_id, public_key)
    origin, size, root = parse_checkpoint(text)
    with open(entry_file, "rb") as f:
        entry = f.read().rstrip(b"\n")
    with open(proof_file, encoding="utf-8") as f:
        proof = json.load(f)
    if proof["tree_size"] != size:
        fail("proof is for size %d, checkpoint for %d" % (proof["tree_size"], size))
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    if leaf.hex() != proof["leaf_hash"]:
        fail("leaf hash of the exported entry differs from the proof's")
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    if not verify_inclusion(leaf, proof["seq"], size, hashes, root):
        fail("inclusion proof does not verify against the checkpoint root")
    print("ok: %s size %d, entry %d included" % (origin, size, proof["seq"]))


if __name__ == "__main__":
    main()
