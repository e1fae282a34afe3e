//! The vault's secrets and every form in which one could reach an agent: as it is, JSON-escaped,
//! HTML-escaped, percent-encoded, or inside HTTP Basic's base64 — and, after decoding, inside
//! any JSON string of an answer (which catches `\uXXXX` escapes and percent-encoded text too).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::Value;

use super::common::echo::percent_encode;

/// The user name of the connectors that inject a secret as HTTP Basic.
pub const BASIC_USER: &str = "svc";

/// The hostile secrets of the vault, by name: quotes and backslashes, `%`, `+`, `/`, `=`,
/// non-ASCII, a newline. Each starts with `hx_` and is long enough not to appear by chance.
pub const HOSTILE: &[(&str, &str)] = &[
    ("s-plain", "hx_plain_7Kq2Vd9Lm4"),
    ("s-quote", "hx_q\"uo\\te_5Tz8Wc"),
    ("s-pct", "hx_p%2Fc+t/=_3RwB"),
    ("s-uni", "hx_ünï_çødé_6Yp"),
    ("s-nl", "hx_new\nline_8JaQ"),
];

/// One secret and the encodings of it that must never be seen.
pub struct Secret {
    pub name: String,
    /// Text forms searched in answers, records and the log.
    needles: Vec<String>,
}

impl Secret {
    pub fn new(name: &str, raw: &str) -> Secret {
        let json = serde_json::to_string(raw).unwrap();
        let json = json[1..json.len() - 1].to_owned();
        let basic = format!("{BASIC_USER}:{raw}");
        let pct = percent_encode(raw.as_bytes());
        let html = raw
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let mut needles = vec![
            raw.to_owned(),
            json,
            html,
            pct.clone(),
            pct.to_lowercase(),
            STANDARD.encode(&basic),
            STANDARD_NO_PAD.encode(&basic),
            percent_encode(STANDARD.encode(&basic).as_bytes()),
        ];
        needles.sort();
        needles.dedup();
        Secret {
            name: name.to_owned(),
            needles,
        }
    }

    /// The first form of this secret found in `text`, if any.
    fn found_in(&self, text: &str) -> Option<&str> {
        self.needles
            .iter()
            .find(|n| text.contains(n.as_str()))
            .map(String::as_str)
    }
}

/// Every string of a JSON value (keys too), and each one percent-decoded.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            if s.contains('%') {
                out.push(percent_decode(s));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a secret was found in `text` (and in the decoded strings of `json`), in words; empty
/// when it is clean.
pub fn leaks(secrets: &[Secret], what: &str, text: &str, json: Option<&Value>) -> Vec<String> {
    let mut found = Vec::new();
    let mut decoded = Vec::new();
    if let Some(v) = json {
        strings(v, &mut decoded);
    }
    for s in secrets {
        if let Some(form) = s.found_in(text) {
            found.push(format!("{what} holds credential {} as {form:?}", s.name));
            continue;
        }
        if let Some(form) = decoded.iter().find_map(|d| s.found_in(d)) {
            found.push(format!(
                "{what} holds credential {} once its JSON strings are decoded ({form:?})",
                s.name
            ));
        }
    }
    found
}
