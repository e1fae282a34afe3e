//! Scrubbing: taking a credential out of what an upstream sends back, in every form in which Writ
//! sent it.
//!
//! An upstream that echoes its request (a debugging endpoint, an error page quoting the headers, a
//! JSON-RPC error repeating its input, a server logging its environment) would otherwise hand the
//! credential to the agent and to the audit log. Writ knows exactly how it sent each secret
//! ([`Sent`]: a bearer token, a header after a prefix, HTTP Basic, an environment variable), so a
//! [`Scrubber`] is built from those values once per call (HTTP) or per connection (MCP) and looks
//! for every encoding of them that an echo plausibly takes:
//!
//! - the bytes as sent: the whole value with its prefix (`Bearer …`, `token …`, `Basic …`) and the
//!   secret alone; for Basic also `user:secret` and the secret once the upstream decoded it;
//! - JSON string escapes: serde_json's, `\uXXXX` for non-ASCII (lower and upper hex, surrogate
//!   pairs), `/` as `\/`, and `<`, `>`, `&` as `\u003c`… (Go's encoder); serde_json's twice
//!   (JSON text inside a JSON string);
//! - percent-encoding as URLs and forms carry it: RFC 3986 components, JavaScript's
//!   `encodeURIComponent` and `encodeURI`, Python's `quote`, WHATWG forms and queries (`+` for
//!   space), Go's `QueryEscape`, PHP's `urlencode`, and every byte encoded; upper and lower hex;
//! - backslash escapes as Python's `repr` and C-style literals write them (quotes escaped or not);
//! - HTML escapes (`&quot;`, `&#34;`, `&#39;`, `&#x27;`, …), for an error page;
//! - base64, standard and URL-safe, padded or not, of the value and of the secret alone, and the
//!   part of any base64 text that only the secret determines at each of the three alignments,
//!   so that the secret is also found inside the base64 of a longer text (all the headers);
//! - each line of a secret that has several (a PEM key logged line by line).
//!
//! Forms of fewer than four bytes are not looked for (they would redact ordinary text); neither
//! are base64 fragments of fewer than eight characters. A form keeps its non-secret prefix:
//! `Bearer <secret>` becomes `Bearer [redacted]`.
//!
//! A response is scrubbed twice: in its raw bytes (which also covers text that is not JSON), and,
//! when it is JSON, in every string, key and number of the parsed value, so that an echo that only
//! appears once escapes are decoded is caught too; a string that holds JSON text (an MCP tool's
//! answer usually does) is parsed and scrubbed the same way, at any depth. A byte replacement that would break the JSON
//! (a form cut across an escape sequence or across the structure) is not kept: the parsed value
//! is scrubbed instead, so JSON stays JSON with the same shape.
//!
//! This is a defence against echoes, not against a hostile upstream: a server that holds the
//! credential can always send it back in a form no list foresees (reversed, encrypted).

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// What replaces a credential.
pub(crate) const MARKER: &str = "[redacted]";

/// Shortest form looked for: shorter ones would redact ordinary text.
const MIN_FORM: usize = 4;
/// Shortest base64 fragment (and line of a multi-line secret) looked for.
const MIN_FRAGMENT: usize = 8;
/// Past this many bytes of forms the secret is too large to look for; calls fail instead.
const MAX_FORM_BYTES: usize = 16 << 20;

/// How Writ put a secret on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Sent<'a> {
    /// `prefix` followed by the secret: a bearer token (`Bearer `), a header with its prefix, an
    /// MCP header or environment variable.
    Prefixed { prefix: &'a str, secret: &'a [u8] },
    /// HTTP Basic: `Basic base64(username:secret)`.
    Basic { username: &'a str, secret: &'a [u8] },
}

impl Sent<'_> {
    /// The exact bytes Writ sends: a header's value, or an environment variable's.
    pub(crate) fn wire(&self) -> Vec<u8> {
        match *self {
            Sent::Prefixed { prefix, secret } => [prefix.as_bytes(), secret].concat(),
            Sent::Basic { username, secret } => {
                let mut pair = basic_pair(username, secret);
                let value = format!("Basic {}", STANDARD.encode(&pair)).into_bytes();
                pair.fill(0);
                value
            }
        }
    }

    /// The texts that carry secret bytes, each with the non-secret prefix it was sent after.
    fn atoms(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut atoms = Vec::new();
        let secret = match *self {
            Sent::Prefixed { prefix, secret } => {
                atoms.push((prefix.as_bytes().to_vec(), secret.to_vec()));
                secret
            }
            Sent::Basic { username, secret } => {
                let mut pair = basic_pair(username, secret);
                let encoded = STANDARD.encode(&pair).into_bytes();
                pair.fill(0);
                atoms.push((b"Basic ".to_vec(), encoded.clone()));
                atoms.push((Vec::new(), encoded));
                atoms.push((format!("{username}:").into_bytes(), secret.to_vec()));
                secret
            }
        };
        atoms.push((Vec::new(), secret.to_vec()));
        if secret.contains(&b'\n') {
            for line in secret.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() >= MIN_FRAGMENT {
                    atoms.push((Vec::new(), line.to_vec()));
                }
            }
        }
        atoms
    }
}

fn basic_pair(username: &str, secret: &[u8]) -> Vec<u8> {
    let mut pair = Vec::with_capacity(username.len() + 1 + secret.len());
    pair.extend_from_slice(username.as_bytes());
    pair.push(b':');
    pair.extend_from_slice(secret);
    pair
}

/// Finds and replaces the forms of a call's credentials. Built once per call (or connection),
/// it matches all forms in one pass over a text (Aho-Corasick, leftmost-longest), and allocates
/// only where it finds something.
pub(crate) struct Scrubber {
    matcher: Option<AhoCorasick>,
    /// Each form, and how many of its leading bytes are a prefix that is kept (`Bearer `).
    forms: Vec<(Vec<u8>, usize)>,
    /// Whether some form could be the text of a JSON number (a secret of digits).
    numeric: bool,
}

impl Scrubber {
    /// A scrubber that finds nothing: the call carried no credential.
    pub(crate) fn none() -> Scrubber {
        Scrubber {
            matcher: None,
            forms: Vec::new(),
            numeric: false,
        }
    }

    /// The scrubber for what a call (or connection) sent. Fails only for a credential too large to
    /// look for, and then nothing must be returned: the caller fails the call.
    pub(crate) fn new(sent: &[Sent<'_>]) -> Result<Scrubber, String> {
        let mut forms: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for s in sent {
            for (prefix, secret) in s.atoms() {
                add_forms(&mut forms, &prefix, &secret);
            }
        }
        if forms.is_empty() {
            return Ok(Scrubber::none());
        }
        if forms.keys().map(Vec::len).sum::<usize>() > MAX_FORM_BYTES {
            return Err("the credential is too large to be scrubbed from responses".into());
        }
        let forms: Vec<(Vec<u8>, usize)> = forms.into_iter().collect();
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(forms.iter().map(|(f, _)| f))
            .map_err(|e| format!("the credential cannot be scrubbed from responses: {e}"))?;
        let numeric = forms
            .iter()
            .any(|(f, _)| f.iter().all(|b| b"0123456789+-.eE".contains(b)));
        Ok(Scrubber {
            matcher: Some(matcher),
            forms,
            numeric,
        })
    }

    fn finds(&self, haystack: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(haystack))
    }

    /// `haystack` with every form replaced, or `None` when there is none.
    fn replaced(&self, haystack: &[u8]) -> Option<Vec<u8>> {
        let matcher = self.matcher.as_ref()?;
        let mut matches = matcher.find_iter(haystack).peekable();
        matches.peek()?;
        let mut out = Vec::with_capacity(haystack.len());
        let mut done = 0;
        for m in matches {
            let keep = self.forms[m.pattern().as_usize()].1;
            out.extend_from_slice(&haystack[done..m.start() + keep]);
            out.extend_from_slice(MARKER.as_bytes());
            done = m.end();
        }
        out.extend_from_slice(&haystack[done..]);
        Some(out)
    }

    /// Replaces every form in `text`, also inside JSON text it holds; true if there was one.
    pub(crate) fn string(&self, text: &mut String) -> bool {
        let nested = self.nested(text);
        match self.replaced(text.as_bytes()) {
            Some(out) => {
                *text = into_text(out);
                true
            }
            None => nested,
        }
    }

    /// A string holding JSON text with escapes (a tool's JSON answer, a logged request): each
    /// level of JSON escapes the secret once more, so the parsed text is scrubbed as a value
    /// (at any depth) and written back compactly if something was found.
    fn nested(&self, text: &mut String) -> bool {
        let start = text.trim_start();
        if !(start.starts_with('{') || start.starts_with('[')) || !text.contains('\\') {
            return false;
        }
        let Ok(mut inner) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        if !self.value(&mut inner) {
            return false;
        }
        match serde_json::to_string(&inner) {
            Ok(scrubbed) => {
                *text = scrubbed;
                true
            }
            Err(_) => false,
        }
    }

    /// A short text (an error message, a line of stderr) with every form replaced, and also a form
    /// cut short by a truncation: one that the text's end or a `…` interrupts.
    pub(crate) fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        self.nested(&mut text);
        let mut bytes = self
            .replaced(text.as_bytes())
            .unwrap_or_else(|| text.into_bytes());
        if self.matcher.is_some() {
            let mut cut = bytes.len();
            loop {
                if let Some(start) = self.cut_form_before(&bytes[..cut]) {
                    bytes.splice(start..cut, MARKER.bytes());
                    cut = start;
                }
                match find_ellipsis_before(&bytes, cut) {
                    Some(at) => cut = at,
                    None => break,
                }
            }
        }
        into_text(bytes)
    }

    /// Where the secret part of a form begins, if `text` ends inside one (at least [`MIN_FORM`]
    /// bytes of its secret part, not all of it).
    fn cut_form_before(&self, text: &[u8]) -> Option<usize> {
        let mut earliest: Option<usize> = None;
        for (form, keep) in &self.forms {
            let longest = (form.len() - 1).min(text.len());
            for len in (keep + MIN_FORM..=longest).rev() {
                if text.ends_with(&form[..len]) {
                    let start = text.len() - len + keep;
                    earliest = Some(earliest.map_or(start, |e| e.min(start)));
                    break;
                }
            }
        }
        earliest
    }

    /// Replaces every form in the strings, keys and numbers of `value`; true if there was one.
    /// A number containing a form becomes the string `"[redacted]"`; keys that become equal keep
    /// the last value.
    pub(crate) fn value(&self, value: &mut Value) -> bool {
        if self.matcher.is_none() {
            return false;
        }
        match value {
            Value::String(s) => self.string(s),
            Value::Array(items) => items.iter_mut().fold(false, |f, v| self.value(v) | f),
            Value::Object(map) => {
                let mut found = map.values_mut().fold(false, |f, v| self.value(v) | f);
                if map.keys().any(|k| self.finds(k.as_bytes())) {
                    for (mut key, v) in std::mem::take(map) {
                        self.string(&mut key);
                        map.insert(key, v);
                    }
                    found = true;
                }
                found
            }
            Value::Number(n) if self.numeric => {
                let text = n.to_string();
                match self.replaced(text.as_bytes()) {
                    Some(out) => {
                        *value = Value::String(into_text(out));
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// An upstream's response body, scrubbed: the parsed JSON when it is JSON, else its text (or
    /// null when empty); and whether a form was found.
    pub(crate) fn response(&self, raw: &[u8]) -> (Value, bool) {
        let text = |bytes: &[u8]| match bytes {
            [] => Value::Null,
            bytes => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        };
        let (mut body, found_raw) = match self.replaced(raw) {
            None => (
                serde_json::from_slice(raw).unwrap_or_else(|_| text(raw)),
                false,
            ),
            Some(scrubbed) => match serde_json::from_slice(&scrubbed) {
                Ok(v) => (v, true),
                // The replacement broke the JSON (a form cut across an escape or the structure):
                // the parsed original is scrubbed below instead.
                Err(_) => match serde_json::from_slice(raw) {
                    Ok(v) => (v, false),
                    Err(_) => (text(&scrubbed), true),
                },
            },
        };
        let found_parsed = self.value(&mut body);
        (body, found_raw || found_parsed)
    }
}

fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The last `…` that starts before `end`.
fn find_ellipsis_before(bytes: &[u8], end: usize) -> Option<usize> {
    const ELLIPSIS: &[u8] = "…".as_bytes();
    bytes[..end]
        .windows(ELLIPSIS.len())
        .rposition(|w| w == ELLIPSIS)
}

/// Adds every form of `prefix` + `secret`: with the prefix (kept on replacement) and without.
fn add_forms(forms: &mut BTreeMap<Vec<u8>, usize>, prefix: &[u8], secret: &[u8]) {
    let mut add = |form: Vec<u8>, keep: usize| {
        let long_enough = if keep == 0 {
            form.len() >= MIN_FORM
        } else {
            form.len() > keep && form.len() >= MIN_FORM
        };
        if long_enough {
            let entry = forms.entry(form).or_insert(keep);
            *entry = (*entry).min(keep);
        }
    };
    for encoding in Encoding::all() {
        let Some(encoded_secret) = encoding.apply(secret) else {
            continue;
        };
        if !prefix.is_empty()
            && let Some(encoded_prefix) = encoding.apply(prefix)
        {
            let keep = encoded_prefix.len();
            add([encoded_prefix, encoded_secret.clone()].concat(), keep);
        }
        add(encoded_secret, 0);
    }
    let whole = [prefix, secret].concat();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        add(engine.encode(secret).into_bytes(), 0);
        if !prefix.is_empty() {
            add(engine.encode(&whole).into_bytes(), 0);
        }
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            let fragment = base64_fragment(engine, secret, offset);
            if fragment.len() >= MIN_FRAGMENT {
                add(fragment, 0);
            }
        }
    }
}

/// The characters of base64 text that only `secret` determines when it starts `offset` bytes
/// into a three-byte group of a longer text.
fn base64_fragment(engine: &impl base64::Engine, secret: &[u8], offset: usize) -> Vec<u8> {
    let mut buf = vec![0u8; offset];
    buf.extend_from_slice(secret);
    buf.resize(buf.len().div_ceil(3) * 3, 0);
    let encoded = engine.encode(&buf).into_bytes();
    buf.fill(0);
    // Character i carries bits [6i, 6i + 6); the secret's bits are [8 offset, 8 (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let last = (8 * (offset + secret.len())) / 6;
    if first >= last {
        return Vec::new();
    }
    encoded[first..last].to_vec()
}

/// A per-character encoding of text, so that `encode(prefix + secret)` is
/// `encode(prefix) + encode(secret)`.
#[derive(Clone, Copy)]
enum Encoding {
    Raw,
    Json {
        /// Non-ASCII as `\uXXXX`: `None` leaves it raw; `Some(true)` upper-case hex.
        unicode: Option<bool>,
        slash: bool,
        html: bool,
    },
    /// serde_json's escapes applied twice: JSON text in a JSON string, in a text that is not
    /// JSON itself (an error message quoting a request body).
    JsonTwice,
    /// Backslash escapes of `\\`, newline, carriage return and tab, and of `quote` if any, the
    /// rest as it is: Python's `repr`, C-style string literals in logs and tracebacks.
    Backslash {
        quote: Option<char>,
    },
    Percent {
        /// Punctuation left as it is (letters and digits always are, except for `every`).
        kept: &'static [u8],
        plus_for_space: bool,
        upper: bool,
        every: bool,
    },
    Html {
        quote: &'static str,
        apostrophe: &'static str,
    },
}

/// Percent-encoders as deployed: the punctuation each leaves alone, and whether space is `+`.
const PERCENT_STYLES: [(&[u8], bool); 7] = [
    (b"-._~", false),                          // RFC 3986 unreserved, PHP rawurlencode
    (b"-._~!'()*", false),                     // JavaScript encodeURIComponent
    (b"-._~/", false),                         // Python quote
    (b"-._~!#$&'()*+,/:;=?@", false),          // JavaScript encodeURI
    (b"!$%&'()*+,-./:;=?@[\\]^_`{|}~", false), // WHATWG URL query
    (b"*-._", true),                           // WHATWG forms, Java URLEncoder
    (b"-._~", true),                           // Go QueryEscape, Python quote_plus
];

impl Encoding {
    fn all() -> Vec<Encoding> {
        let mut all = vec![Encoding::Raw];
        for unicode in [None, Some(false), Some(true)] {
            for slash in [false, true] {
                for html in [false, true] {
                    all.push(Encoding::Json {
                        unicode,
                        slash,
                        html,
                    });
                }
            }
        }
        all.push(Encoding::JsonTwice);
        for quote in [None, Some('\''), Some('"')] {
            all.push(Encoding::Backslash { quote });
        }
        for upper in [true, false] {
            for (kept, plus_for_space) in PERCENT_STYLES {
                all.push(Encoding::Percent {
                    kept,
                    plus_for_space,
                    upper,
                    every: false,
                });
            }
            // PHP urlencode: `~` encoded, space as `+`.
            all.push(Encoding::Percent {
                kept: b"-._",
                plus_for_space: true,
                upper,
                every: false,
            });
            all.push(Encoding::Percent {
                kept: b"",
                plus_for_space: false,
                upper,
                every: true,
            });
        }
        for quote in ["&quot;", "&#34;", "&#x22;"] {
            for apostrophe in ["&#39;", "&#x27;", "&#039;", "&apos;"] {
                all.push(Encoding::Html { quote, apostrophe });
            }
        }
        all
    }

    /// The encoded bytes; `None` where the encoding needs text and the bytes are not UTF-8.
    fn apply(self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self {
            Encoding::Raw => Some(bytes.to_vec()),
            Encoding::Json {
                unicode,
                slash,
                html,
            } => {
                let text = std::str::from_utf8(bytes).ok()?;
                Some(json_escape(text, unicode, slash, html).into_bytes())
            }
            Encoding::Backslash { quote } => {
                let text = std::str::from_utf8(bytes).ok()?;
                let mut out = String::with_capacity(text.len() + 8);
                for c in text.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if Some(c) == quote => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
                Some(out.into_bytes())
            }
            Encoding::JsonTwice => {
                let text = std::str::from_utf8(bytes).ok()?;
                let once = json_escape(text, None, false, false);
                Some(json_escape(&once, None, false, false).into_bytes())
            }
            Encoding::Percent {
                kept,
                plus_for_space,
                upper,
                every,
            } => {
                let hex: &[u8; 16] = if upper {
                    b"0123456789ABCDEF"
                } else {
                    b"0123456789abcdef"
                };
                let mut out = Vec::with_capacity(bytes.len() * 3);
                for &b in bytes {
                    if b == b' ' && plus_for_space {
                        out.push(b'+');
                    } else if !every && (b.is_ascii_alphanumeric() || kept.contains(&b)) {
                        out.push(b);
                    } else {
                        out.extend_from_slice(&[
                            b'%',
                            hex[usize::from(b >> 4)],
                            hex[usize::from(b & 15)],
                        ]);
                    }
                }
                Some(out)
            }
            Encoding::Html { quote, apostrophe } => {
                let text = std::str::from_utf8(bytes).ok()?;
                let mut out = String::with_capacity(text.len() + 8);
                for c in text.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '"' => out.push_str(quote),
                        '\'' => out.push_str(apostrophe),
                        c => out.push(c),
                    }
                }
                Some(out.into_bytes())
            }
        }
    }
}

/// A JSON string's content: serde_json's escapes, and optionally `\uXXXX` for non-ASCII
/// (`unicode`: `Some(upper)`), `\/`, and Go's `\u003c` `\u003e` `\u0026` `\u2028` `\u2029`.
fn json_escape(text: &str, unicode: Option<bool>, slash: bool, html: bool) -> String {
    let upper = unicode.unwrap_or(false);
    let mut out = String::with_capacity(text.len() + 8);
    let mut units = [0u16; 2];
    let mut escape = |out: &mut String, c: char| {
        for unit in c.encode_utf16(&mut units) {
            if upper {
                out.push_str(&format!("\\u{unit:04X}"));
            } else {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    };
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if slash => out.push_str("\\/"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if html => escape(&mut out, c),
            c if u32::from(c) < 0x20 => escape(&mut out, c),
            c if !c.is_ascii() && unicode.is_some() => escape(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
