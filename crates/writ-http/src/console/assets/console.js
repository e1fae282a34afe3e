// Writ console: the live approvals inbox and the in-browser verification of an action's record.
// Hand-written, no dependencies. Untrusted text only ever goes into the page as textContent.
"use strict";

// ------------------------------------------------------------------------------------------
// Time left on approvals

function timeLeft(expires) {
  const ms = Date.parse(expires) - Date.now();
  if (Number.isNaN(ms)) return "unknown";
  if (ms <= 0) return "expired";
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const parts = [];
  if (h) parts.push(h + "h");
  if (h || m) parts.push(m + "m");
  parts.push((s % 60) + "s");
  return parts.join(" ") + " left";
}

function tickTimes() {
  for (const el of document.querySelectorAll("[data-expires]")) {
    if (el.dataset.expires) el.textContent = timeLeft(el.dataset.expires);
  }
}

// ------------------------------------------------------------------------------------------
// The live inbox

function text(v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) return v.length ? v.map(text).join(", ") : "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// The same line as the server's grant_scope().
function grantScope(scope) {
  if (!scope || typeof scope !== "object") return "—";
  let line = text(scope.actions);
  if (Array.isArray(scope.resources) && scope.resources.length) line += " on " + text(scope.resources);
  line += ", until " + (scope.expires_at || "");
  if (scope.revoked === true) line += " (revoked)";
  return line;
}

function decisionLine(d) {
  const verb = d.decision === "approve" ? "approved" : d.decision === "deny" ? "denied" : d.decision;
  let line = d.approver + " " + verb + " at " + d.time;
  if (typeof d.comment === "string") line += ": " + d.comment;
  return line;
}

function setField(card, name, value) {
  for (const el of card.querySelectorAll('[data-field="' + name + '"]')) el.textContent = value;
}

// A card for approval `a` (the JSON the server sends), from the page's template.
function buildCard(a) {
  const template = document.getElementById("approval-template");
  const card = template.content.firstElementChild.cloneNode(true);
  const act = a.action || {};
  card.dataset.approvalId = a.id;
  setField(card, "operation", act.connector + "." + act.operation);
  setField(card, "agent", text(act.agent));
  setField(card, "user", text(act.user));
  setField(card, "grant", text(act.grant));
  setField(card, "grant-scope", grantScope(act.grant_scope));
  setField(card, "intent", text(act.intent));
  setField(card, "rationale", text(act.rationale));
  setField(card, "gate", text(act.policy_ids));
  setField(card, "reason", text(a.reason));
  setField(card, "bundle", text(act.bundle_version));
  setField(card, "approvers", text(a.approvers));
  const decisions = a.decisions || [];
  const approvals = decisions.filter((d) => d.decision === "approve").length;
  setField(card, "quorum", approvals + " of " + text(a.quorum) + " approvals");
  setField(card, "hash", text(a.action_hash));
  setField(card, "args", JSON.stringify(act.args, null, 2));
  const left = card.querySelector('[data-field="time-left"]');
  left.dataset.expires = a.expires_at;
  left.textContent = timeLeft(a.expires_at);
  const record = card.querySelector('[data-field="record"]');
  record.href = "/console/actions/" + encodeURIComponent(a.action_id);
  const list = card.querySelector('[data-field="decisions"]');
  if (decisions.length) list.querySelector(".none")?.remove();
  for (const d of decisions) {
    const li = document.createElement("li");
    li.textContent = decisionLine(d);
    list.appendChild(li);
  }
  const form = card.querySelector("form.decide");
  if (a.you_may_decide === true && form) {
    form.action = "/console/approvals/" + encodeURIComponent(a.id) + "/decision";
    form.querySelector('input[name="action_hash"]').value = a.action_hash;
  } else if (form) {
    const p = document.createElement("p");
    p.className = "cannot";
    p.textContent = a.user === document.querySelector("[data-signed-in]")?.dataset.signedIn
      ? "Your own agent asked for this: someone else must decide."
      : "You may see this request but not decide it.";
    form.replaceWith(p);
  }
  card.classList.add("arrived");
  return card;
}

function startInbox() {
  const list = document.getElementById("approvals");
  if (!list || !window.EventSource) return;
  const status = document.getElementById("live-status");
  const empty = document.getElementById("no-approvals");
  const setStatus = (state, message) => {
    status.dataset.live = state;
    status.textContent = message;
  };
  const known = (id) =>
    Array.from(list.children).some((c) => c.dataset.approvalId === id);
  const source = new EventSource("/console/events");
  source.onopen = () => setStatus("open", "Live: new requests appear here as they arrive.");
  source.onerror = () => setStatus("reconnecting", "Connection lost; reconnecting…");
  source.addEventListener("approval", (ev) => {
    let a;
    try {
      a = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (typeof a.id !== "string" || known(a.id)) return;
    list.prepend(buildCard(a));
    empty.hidden = true;
  });
  source.addEventListener("closed", (ev) => {
    let c;
    try {
      c = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    for (const card of Array.from(list.children)) {
      if (card.dataset.approvalId === c.id) {
        card.classList.add("closed");
        const form = card.querySelector("form.decide");
        if (form) form.remove();
        const note = document.createElement("p");
        note.className = "cannot";
        note.textContent = "Decided or expired: see the record.";
        card.appendChild(note);
      }
    }
  });
}

// ------------------------------------------------------------------------------------------
// In-browser verification, the same algorithms as writ-audit (RFC 9162 hashing and inclusion
// proofs, C2SP signed notes with Ed25519): nothing here trusts the server's word for a hash.

const enc = new TextEncoder();

function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hexdecode(s) {
  if (!/^[0-9a-f]{64}$/.test(s)) throw new Error("a proof hash is not 64 hex digits");
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// SHA-256(0x00 ‖ data)
const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
// SHA-256(0x01 ‖ left ‖ right)
const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

// RFC 9162 §2.1.3.2, as writ_audit::verify_inclusion. BigInt: indices may pass 2^32.
async function verifyInclusion(leaf, index, size, proof, root) {
  if (index >= size) throw new Error("leaf index " + index + " is not below tree size " + size);
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new Error("the proof has the wrong number of hashes");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof has the wrong number of hashes");
  if (!equal(r, root)) throw new Error("the proof does not lead to the checkpoint's root");
}

// A verifier key `<name>+<hex id>+<base64(0x01 ‖ key)>`; the id must be the first four bytes
// of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key).
async function parseVerifierKey(textKey) {
  // The name and the id contain no "+"; the base64 key may.
  const first = textKey.indexOf("+");
  const second = textKey.indexOf("+", first + 1);
  if (first < 1 || second < 0) throw new Error("the log key is not <name>+<id>+<key>");
  const name = textKey.slice(0, first);
  const idHex = textKey.slice(first + 1, second);
  const keyB64 = textKey.slice(second + 1);
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new Error("the log key's id is not 8 hex digits");
  const raw = b64decode(keyB64);
  if (raw.length !== 33 || raw[0] !== 1) throw new Error("the log key is not an Ed25519 key");
  const key = raw.slice(1);
  const digest = await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(1), key));
  const id = Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
  if (id !== idHex) throw new Error("the log key does not match its key id");
  return { name, id: digest.slice(0, 4), key };
}

// Opens a C2SP signed note whose signature by `verifier` must verify; returns the checkpoint
// (origin, size, root) it carries.
async function openCheckpoint(note, verifier) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new Error("the note has no signature block");
  const body = note.slice(0, split + 1);
  const sigs = note.slice(split + 2);
  if (!sigs.endsWith("\n")) throw new Error("the signature block must end with a newline");
  let signature = null;
  for (const line of sigs.slice(0, -1).split("\n")) {
    if (!line.startsWith("\u2014 ")) throw new Error("a signature line does not start with \u2014");
    const [name, blob, extra] = line.slice(2).split(" ");
    if (extra !== undefined || !blob) throw new Error("a signature line is malformed");
    const raw = b64decode(blob);
    if (raw.length < 5) throw new Error("a signature line is too short");
    if (name === verifier.name && equal(raw.slice(0, 4), verifier.id)) signature = raw.slice(4);
  }
  if (!signature) throw new Error("the checkpoint carries no signature by the log key");
  if (signature.length !== 64) throw new Error("the signature is not an Ed25519 signature");
  const key = await crypto.subtle.importKey("raw", verifier.key, { name: "Ed25519" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, enc.encode(body));
  if (!ok) throw new Error("the checkpoint's signature does not verify");
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) throw new Error("the checkpoint is missing lines");
  if (!/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("the checkpoint's size is malformed");
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new Error("the checkpoint's root is not 32 bytes");
  return { origin: lines[0], size: BigInt(lines[1]), root };
}

function mark(el, attr, ok, message) {
  el.setAttribute(attr, ok ? "verified" : "failed");
  el.textContent = ok ? "verified" : "FAILED: " + message;
}

async function verifyRecord() {
  const entries = Array.from(document.querySelectorAll("li.entry"));
  const summary = document.getElementById("proof-summary");
  if (!summary) return;
  const cp = document.getElementById("checkpoint");
  const fail = (why) => {
    summary.dataset.proofSummary = "failed";
    summary.textContent = "Not verified: " + why;
  };
  if (!window.crypto || !crypto.subtle) {
    for (const e of entries) mark(e.querySelector("[data-proof-status]"), "data-proof-status", false, "WebCrypto is unavailable here");
    return fail("this page is not in a secure context (serve the console over HTTPS), so the browser cannot verify");
  }
  if (!cp) {
    for (const e of entries) mark(e.querySelector("[data-proof-status]"), "data-proof-status", false, "no checkpoint");
    return fail("no signed checkpoint covers this action yet");
  }
  const cpStatus = cp.querySelector("[data-checkpoint-status]");
  let checkpoint;
  try {
    const verifier = await parseVerifierKey(cp.dataset.verifierKey);
    const note = new TextDecoder("utf-8", { fatal: true }).decode(b64decode(cp.dataset.noteB64));
    checkpoint = await openCheckpoint(note, verifier);
    if (checkpoint.origin !== verifier.name) throw new Error("the checkpoint is for log " + checkpoint.origin);
    if (String(checkpoint.size) !== cp.dataset.size) throw new Error("the checkpoint's size is not the one shown");
    mark(cpStatus, "data-checkpoint-status", true);
    cpStatus.textContent = "verified (Ed25519, " + verifier.name + ")";
  } catch (err) {
    mark(cpStatus, "data-checkpoint-status", false, err.message);
    for (const e of entries) mark(e.querySelector("[data-proof-status]"), "data-proof-status", false, "the checkpoint did not verify");
    return fail("the checkpoint did not verify: " + err.message);
  }
  let failed = 0;
  for (const e of entries) {
    const status = e.querySelector("[data-proof-status]");
    try {
      if (e.dataset.proof === undefined) throw new Error("no inclusion proof");
      const proof = e.dataset.proof === "" ? [] : e.dataset.proof.split(",").map(hexdecode);
      const bytes = b64decode(e.dataset.canonicalB64);
      const entry = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      if (String(entry.seq) !== e.dataset.seq) throw new Error("the entry's bytes are for another sequence number");
      await verifyInclusion(await leafHash(bytes), BigInt(e.dataset.seq), checkpoint.size, proof, checkpoint.root);
      mark(status, "data-proof-status", true);
    } catch (err) {
      failed++;
      mark(status, "data-proof-status", false, err.message);
    }
  }
  if (failed) return fail(failed + " of " + entries.length + " entries did not verify");
  summary.dataset.proofSummary = "verified";
  summary.textContent =
    "Verified in your browser: all " + entries.length +
    " entries are in the log whose checkpoint of size " + checkpoint.size + " is signed by the log key.";
}

document.addEventListener("DOMContentLoaded", () => {
  tickTimes();
  setInterval(tickTimes, 1000);
  startInbox();
  verifyRecord().catch((err) => {
    const summary = document.getElementById("proof-summary");
    if (summary) {
      summary.dataset.proofSummary = "failed";
      summary.textContent = "Not verified: " + err.message;
    }
  });
});
