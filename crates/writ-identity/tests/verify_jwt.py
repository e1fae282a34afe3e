"""Independent check of a Writ delegated token with PyJWT (not Writ's code).

Usage: verify_jwt.py TOKEN_FILE JWKS_FILE ISSUER AUDIENCE
Verifies the EdDSA signature with the key from the JWKS, the issuer, audience and time, and the
RFC 8693 / RFC 9396 claim shapes. Exits non-zero with a message on any failure.
"""
import json
import sys

import jwt

token = open(sys.argv[1]).read().strip()
jwks = json.load(open(sys.argv[2]))
issuer, audience = sys.argv[3], sys.argv[4]

header = jwt.get_unverified_header(token)
assert header["alg"] == "EdDSA", header
assert header["typ"] == "at+jwt", header
jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
key = jwt.PyJWK.from_dict(jwk)
claims = jwt.decode(
    token,
    key=key.key,
    algorithms=["EdDSA"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
)
assert isinstance(claims["sub"], str) and claims["sub"], claims
assert isinstance(claims["act"], dict) and isinstance(claims["act"]["sub"], str), claims
assert claims["client_id"] == claims["act"]["sub"], claims
details = claims["authorization_details"]
assert isinstance(details, list) and len(details) == 1, details
d = details[0]
assert d["type"] == "writ_grant", d
assert isinstance(d["grant_id"], str) and isinstance(d["actions"], list), d
assert claims["exp"] > claims["iat"], claims
# A token with a flipped signature bit must be refused.
head, body, sig = token.split(".")
bad = head + "." + body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
try:
    jwt.decode(bad, key=key.key, algorithms=["EdDSA"], audience=audience, issuer=issuer)
except jwt.InvalidSignatureError:
    pass
else:
    raise SystemExit("PyJWT accepted a tampered token")
print(json.dumps({"ok": True, "sub": claims["sub"], "act": claims["act"]["sub"]}))
