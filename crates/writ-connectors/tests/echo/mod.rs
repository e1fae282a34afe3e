//! An upstream's echo of what it received, in the forms echoes take, and a check, independent
//! of Writ's scrubber, that the agent cannot get a secret back from what it was given: it decodes
//! every string it sees (JSON inside strings, percent-encoding, HTML escapes, base64) and looks
//! for the secret in each decoding.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value, json};

/// What replaces a credential.
pub const MARKER: &str = "[redacted]";
/// What `Outcome::redacted` says when the upstream echoed the credential.
pub const ECHOED: &str = "(credential echoed by the upstream)";

/// Secrets with the characters that escape differently in each encoding. Those with a newline
/// cannot be sent in an HTTP header (only inside Basic's base64, or in an environment variable).
pub const SECRETS: &[&str] = &[
    "ghp_plain-Token-0123",
    "quo\"te\"d-s3cret",
    "back\\slash\\\\s3cret",
    "pct%41%2B+plus/slash=eq==",
    "sp ace s3cret",
    "café-日本-s3cret",
    "<html>&'amp'-s3cret",
    "line1-s3cret\nline2-s3cret",
    "all\"of\\them%+/=é日本 <&>\n",
];

/// The echo forms [`echo`] produces.
pub const FORMS: &[&str] = &[
    "json",
    "ascii_json",
    "double",
    "text",
    "html",
    "base64",
    "decoded",
    "url",
];

/// Whether a form answers JSON (so the agent must get JSON back).
pub fn is_json(form: &str) -> bool {
    !matches!(form, "text" | "html")
}

/// The upstream's answer echoing `received` (name, value) in `form`: (content type, body).
pub fn echo(form: &str, received: &[(String, String)]) -> (&'static str, String) {
    let object: Map<String, Value> = received
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let dump: String = received
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let json_text = serde_json::to_string(&object).unwrap();
    match form {
        "json" => ("application/json", json_text),
        // Python's json.dumps and PHP's json_encode: non-ASCII as \uXXXX, `/` as `\/`.
        "ascii_json" => {
            let mut out = String::new();
            for c in json_text.chars() {
                if c == '/' {
                    out.push_str("\\/");
                } else if c.is_ascii() {
                    out.push(c);
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
            ("application/json", out)
        }
        "double" => (
            "application/json",
            json!({"log": json_text, "request": {"raw": dump}}).to_string(),
        ),
        "text" => ("text/plain", format!("you sent:\n{dump}")),
        "html" => (
            "text/html",
            format!(
                "<html><body><h1>Unauthorized</h1><pre>{}</pre></body></html>",
                html_escape(&dump)
            ),
        ),
        "base64" => {
            let each: Vec<String> = received
                .iter()
                .map(|(_, v)| URL_SAFE_NO_PAD.encode(v))
                .collect();
            (
                "application/json",
                json!({"dump": STANDARD.encode(&dump), "each": each}).to_string(),
            )
        }
        // What a server that decodes Basic credentials reports.
        "decoded" => {
            let decoded: Map<String, Value> = received
                .iter()
                .map(|(k, v)| {
                    let shown = match v.strip_prefix("Basic ") {
                        Some(b64) => {
                            String::from_utf8_lossy(&STANDARD.decode(b64).unwrap()).into_owned()
                        }
                        None => v.clone(),
                    };
                    (k.clone(), Value::String(shown))
                })
                .collect();
            ("application/json", Value::Object(decoded).to_string())
        }
        "url" => {
            let query: Vec<String> = received
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect();
            let paths: Vec<String> = received
                .iter()
                .map(|(_, v)| format!("https://upstream.test/v/{}", component_lower(v)))
                .collect();
            (
                "application/json",
                json!({
                    "next": format!("https://upstream.test/cb?{}", query.join("&")),
                    "paths": paths,
                })
                .to_string(),
            )
        }
        other => panic!("unknown echo form {other}"),
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// application/x-www-form-urlencoded: `+` for space, upper-case hex.
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An RFC 3986 path component with lower-case hex.
fn component_lower(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// Fails if the secret can be read back from `body`.
pub fn assert_no_leak(body: &Value, secret: &str, context: &str) {
    if let Err(leak) = leak(body, secret) {
        panic!("{context}: {leak}");
    }
}

/// Whether the secret can be read back from `body`: from any string, key or number, or any
/// decoding of one, outside the markers.
pub fn leak(body: &Value, secret: &str) -> Result<(), String> {
    let mut texts = Vec::new();
    strings(body, &mut texts);
    texts.push(body.to_string());
    let escaped = serde_json::to_string(secret).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    for text in &texts {
        for decoded in decodings(text, 0) {
            for piece in decoded.split(|b| *b == 0) {
                if contains(piece, secret.as_bytes()) || contains(piece, escaped.as_bytes()) {
                    return Err(format!("the secret can be read back from {text:?}"));
                }
            }
        }
    }
    Ok(())
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `text` and everything it decodes to, with each marker turned into a NUL (a separator: a secret
/// that spans a marker is not readable).
fn decodings(text: &str, depth: u32) -> Vec<Vec<u8>> {
    let text = text.replace(MARKER, "\0");
    let mut out = vec![text.clone().into_bytes()];
    if depth > 2 {
        return out;
    }
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        let mut inner = Vec::new();
        strings(&v, &mut inner);
        for s in inner {
            out.extend(decodings(&s, depth + 1));
        }
    }
    out.push(html_unescape(&text).into_bytes());
    out.push(unbackslash(&text).into_bytes());
    out.push(percent_decode(&text, false));
    out.push(percent_decode(&text, true));
    for run in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
        .filter(|r| r.len() >= 8)
    {
        out.extend(base64_decodings(run));
    }
    out
}

/// C-style and Python `repr` escapes undone.
fn unbackslash(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn html_unescape(text: &str) -> String {
    let mut text = text.to_owned();
    for (entity, c) in [
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#x22;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
        ("&#039;", "'"),
        ("&apos;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ] {
        text = text.replace(entity, c);
    }
    text
}

fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' && plus_is_space {
            b' '
        } else {
            bytes[i]
        });
        i += 1;
    }
    out
}

/// A base64 run decoded from each of its first four characters, in both alphabets.
fn base64_decodings(run: &str) -> Vec<Vec<u8>> {
    let config = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&alphabet::STANDARD, config),
        GeneralPurpose::new(&alphabet::URL_SAFE, config),
    ];
    let run = run.trim_end_matches('=');
    let mut out = Vec::new();
    for start in 0..4.min(run.len()) {
        let part = &run[start..];
        let usable = part.len() - part.len() % 4;
        let mut candidates = vec![&part[..usable]];
        if part.len() % 4 >= 2 {
            candidates.push(part);
        }
        for c in candidates {
            for engine in &engines {
                if let Ok(bytes) = engine.decode(c) {
                    out.push(bytes);
                }
            }
        }
    }
    out
}
