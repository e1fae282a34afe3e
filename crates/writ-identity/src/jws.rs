//! JWS compact serialization (RFC 7515), only as much as Writ needs: strict parsing and
//! Ed25519 / ES256 signatures. Written here rather than taken from a general JWT library so that
//! the set of accepted algorithms is a closed list in one place: no `none`, no HMAC, no RSA.

use serde_json::{Map, Value};

use crate::base64url::{b64, b64_decode};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A token split into its parts, nothing verified yet.
pub(crate) struct Parts<'a> {
    pub header: Map<String, Value>,
    pub payload: Vec<u8>,
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

/// Why a compact JWS could not even be parsed. Never contains the token.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("the token is too long");
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err("the token is not a compact JWS (three base64url parts separated by dots)");
    };
    let header_bytes = b64_decode(h).ok_or("the token header is not base64url")?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| "the token header is not a JSON object")?;
    let payload = b64_decode(p).ok_or("the token payload is not base64url")?;
    let signature = b64_decode(s).ok_or("the token signature is not base64url")?;
    Ok(Parts {
        header,
        payload,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// Signs `header.payload` with Ed25519 and returns the compact token.
pub(crate) fn sign_eddsa(
    header: &Value,
    claims: &Value,
    key: &ed25519_dalek::SigningKey,
) -> String {
    use ed25519_dalek::Signer;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// RFC 7638 thumbprint of an Ed25519 public key: the `kid` Writ gives its keys.
pub fn ed25519_thumbprint(key: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::Digest;
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64(key.as_bytes())
    );
    b64(&sha2::Sha256::digest(canonical.as_bytes()))
}
