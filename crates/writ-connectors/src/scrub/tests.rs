#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{MARKER, Scrubber, Sent};

fn bearer(secret: &str) -> Scrubber {
    Scrubber::new(&[Sent::Prefixed {
        prefix: "Bearer ",
        secret: secret.as_bytes(),
    }])
    .unwrap()
}

fn basic(username: &str, secret: &str) -> Scrubber {
    Scrubber::new(&[Sent::Basic {
        username,
        secret: secret.as_bytes(),
    }])
    .unwrap()
}

fn scrubbed(scrubber: &Scrubber, text: &str) -> String {
    let mut text = text.to_owned();
    scrubber.string(&mut text);
    text
}

/// Each row: how the secret was sent, what the upstream said, what is left of it.
#[test]
fn every_form_of_a_sent_secret_is_replaced() {
    let b64 = |s: &str| STANDARD.encode(s);
    let cases: Vec<(Scrubber, String, String)> = vec![
        // As sent, with and without the prefix; the prefix stays.
        (
            bearer("s3cr3t-tok"),
            "got Bearer s3cr3t-tok.".into(),
            "got Bearer [redacted].".into(),
        ),
        (
            bearer("s3cr3t-tok"),
            "token=s3cr3t-tok".into(),
            "token=[redacted]".into(),
        ),
        (
            Scrubber::new(&[Sent::Prefixed {
                prefix: "token ",
                secret: b"abc",
            }])
            .unwrap(),
            "Authorization: token abc!".into(),
            "Authorization: token [redacted]!".into(),
        ),
        // Basic: the header, its base64 alone, the decoded pair, the secret alone, base64 of it.
        (
            basic("writ", "pa:ss\"w0rd"),
            format!("Basic {}", b64("writ:pa:ss\"w0rd")),
            "Basic [redacted]".into(),
        ),
        (
            basic("writ", "pa:ss\"w0rd"),
            format!("[{}]", b64("writ:pa:ss\"w0rd")),
            "[[redacted]]".into(),
        ),
        (
            basic("writ", "pa:ss\"w0rd"),
            "user writ:pa:ss\"w0rd".into(),
            "user writ:[redacted]".into(),
        ),
        (
            basic("writ", "pa:ss\"w0rd"),
            "password pa:ss\"w0rd".into(),
            "password [redacted]".into(),
        ),
        (
            basic("writ", "pa:ss\"w0rd"),
            b64("pa:ss\"w0rd"),
            MARKER.into(),
        ),
        // JSON escapes: serde_json's, \uXXXX in both cases, \/ and Go's \u003c.
        (
            bearer("tok\"en\\x"),
            r#"{"a":"tok\"en\\x"}"#.into(),
            r#"{"a":"[redacted]"}"#.into(),
        ),
        (
            bearer("café/日本"),
            r#""caf\u00e9\/\u65e5\u672c""#.into(),
            r#""[redacted]""#.into(),
        ),
        (
            bearer("café/日本"),
            r#""caf\u00E9/\u65E5\u672C""#.into(),
            r#""[redacted]""#.into(),
        ),
        (
            bearer("a<b>&c-d"),
            r#""a\u003cb\u003e\u0026c-d""#.into(),
            r#""[redacted]""#.into(),
        ),
        (
            bearer("line1\nline2"),
            r#""line1\nline2""#.into(),
            r#""[redacted]""#.into(),
        ),
        (
            bearer("emoji😀key"),
            r#""emoji\ud83d\ude00key""#.into(),
            r#""[redacted]""#.into(),
        ),
        // Python's repr and C-style literals: backslashes escaped, quotes as they are.
        (
            bearer("a\"b\\c\nd"),
            "{'k': 'a\"b\\\\c\\nd'}".into(),
            "{'k': '[redacted]'}".into(),
        ),
        // Percent-encoding: components, forms (+ for space), lower-case hex, every byte.
        (
            bearer("a b+c/d=%é"),
            "?t=a%20b%2Bc%2Fd%3D%25%C3%A9&".into(),
            "?t=[redacted]&".into(),
        ),
        (
            bearer("a b+c/d=%é"),
            "?t=a+b%2Bc%2Fd%3D%25%C3%A9&".into(),
            "?t=[redacted]&".into(),
        ),
        (
            bearer("a b+c/d=%é"),
            "?t=a%20b%2bc%2fd%3d%25%c3%a9&".into(),
            "?t=[redacted]&".into(),
        ),
        (
            bearer("a b+c/d=%é"),
            "/p/a%20b+c/d=%25%C3%A9/".into(),
            "/p/[redacted]/".into(),
        ),
        (bearer("abcd"), "%61%62%63%64".into(), MARKER.into()),
        (
            bearer("s3cr3t"),
            "Bearer%20s3cr3t".into(),
            "Bearer%20[redacted]".into(),
        ),
        // HTML escapes, as an error page quotes a header.
        (
            bearer("q\"u'o<te>&"),
            "<p>q&quot;u&#39;o&lt;te&gt;&amp;</p>".into(),
            "<p>[redacted]</p>".into(),
        ),
        (
            bearer("q\"u'o<te>&"),
            "<p>q&#34;u&#x27;o&lt;te&gt;&amp;</p>".into(),
            "<p>[redacted]</p>".into(),
        ),
        // URL-safe base64, and base64 of a longer text in which the secret sits at any offset.
        (
            bearer("s3cr3t~~??>>tok"),
            URL_SAFE_NO_PAD.encode("s3cr3t~~??>>tok"),
            MARKER.into(),
        ),
        // Each line of a multi-line secret (a PEM key logged line by line).
        (
            bearer("-----BEGIN KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEF\r\n-----END KEY-----"),
            "log: MIIEvQIBADANBgkqhkiG9w0BAQEF".into(),
            "log: [redacted]".into(),
        ),
        // Too short to look for: it would redact ordinary text.
        (bearer("abc"), "abc abc".into(), "abc abc".into()),
        (
            bearer("s3cr3t-tok"),
            "nothing here".into(),
            "nothing here".into(),
        ),
    ];
    for (i, (scrubber, echo, expected)) in cases.iter().enumerate() {
        assert_eq!(&scrubbed(scrubber, echo), expected, "case {i}: {echo}");
    }
}

#[test]
fn base64_of_a_longer_text_loses_the_secret_at_every_offset() {
    let secret = "s3cr3t-Token/with+bits==";
    let scrubber = bearer(secret);
    for lead in ["", "a", "ab", "Authorization: Bearer ", "x-api-key: "] {
        let echo = STANDARD.encode(format!("{lead}{secret}\r\nhost: upstream"));
        let out = scrubbed(&scrubber, &echo);
        assert!(out.contains(MARKER), "{lead:?}: {out}");
        // What is left decodes to at most two bytes of the secret on either side.
        for piece in out.split(MARKER) {
            assert!(piece.len() < echo.len() - 16, "{lead:?}: {out}");
        }
    }
}

#[test]
fn the_wire_value_is_what_is_looked_for() {
    let sent = Sent::Basic {
        username: "writ",
        secret: b"p\xc3\xa9ss",
    };
    assert_eq!(
        sent.wire(),
        format!("Basic {}", STANDARD.encode("writ:péss")).into_bytes()
    );
    let sent = Sent::Prefixed {
        prefix: "token ",
        secret: b"xyz1",
    };
    assert_eq!(sent.wire(), b"token xyz1");
    let scrubber = Scrubber::new(&[sent]).unwrap();
    let mut text = String::from_utf8(sent.wire()).unwrap();
    assert!(scrubber.string(&mut text));
    assert_eq!(text, "token [redacted]");
}

#[test]
fn several_secrets_and_no_secret() {
    let scrubber = Scrubber::new(&[
        Sent::Prefixed {
            prefix: "Bearer ",
            secret: b"first-secret",
        },
        Sent::Prefixed {
            prefix: "",
            secret: b"second-secret",
        },
    ])
    .unwrap();
    assert_eq!(
        scrubbed(&scrubber, "first-secret second-secret"),
        "[redacted] [redacted]"
    );
    let none = Scrubber::none();
    assert_eq!(scrubbed(&none, "first-secret"), "first-secret");
    assert_eq!(
        none.response(b"{\"a\":1}"),
        (json!({"a": 1}), false),
        "no credential, nothing found"
    );
    assert!(Scrubber::new(&[]).unwrap().matcher.is_none());
}

/// Each row: the secret, the raw response, the body the agent gets.
#[test]
fn responses_stay_json_with_their_shape() {
    let cases: Vec<(&str, &[u8], Value)> = vec![
        // Escaped in the raw bytes: replaced there.
        (
            "tok\"en\\x",
            br#"{"a":"tok\"en\\x","n":[1,2]}"#,
            json!({"a": "[redacted]", "n": [1, 2]}),
        ),
        // A secret ending in a backslash: its escaped form is the longest match, not the raw
        // form that would cut the escape `\\` in two.
        (
            "abcd\\",
            br#"{"a":"abcd\\","b":"x"}"#,
            json!({"a": "[redacted]", "b": "x"}),
        ),
        // The raw form `abcd\` cuts the escape `\"` (a quote, not the secret): replacing it in
        // the bytes would break the JSON, so the parsed strings are scrubbed instead.
        (
            "abcd\\",
            br#"{"a":"abcd\"","b":"abcd\\"}"#,
            json!({"a": "abcd\"", "b": "[redacted]"}),
        ),
        // Only visible once decoded: \u escapes of a form the list has no exact match for.
        (
            "s3cr3t-x",
            br#"{"a":"\u0073\u0033cr3t-x"}"#,
            json!({"a": "[redacted]"}),
        ),
        // In a key.
        (
            "s3cr3t-x",
            br#"{"s3cr3t-x":{"k":"v"},"b":1}"#,
            json!({"[redacted]": {"k": "v"}, "b": 1}),
        ),
        // Double-encoded JSON: a string holding JSON that holds the secret.
        (
            "q\"uote",
            br#"{"log":"{\"h\":\"q\\\"uote\"}"}"#,
            json!({"log": "{\"h\":\"[redacted]\"}"}),
        ),
        // A secret of digits, echoed as a number.
        (
            "12345678",
            br#"{"pin":12345678,"n":7}"#,
            json!({"pin": "[redacted]", "n": 7}),
        ),
        // Not JSON: the text, scrubbed.
        (
            "s3cr3t-x",
            b"error: s3cr3t-x\n",
            json!("error: [redacted]\n"),
        ),
        ("s3cr3t-x", b"", Value::Null),
    ];
    for (secret, raw, expected) in cases {
        let (body, found) = bearer(secret).response(raw);
        assert_eq!(body, expected, "{}", String::from_utf8_lossy(raw));
        assert_eq!(found, expected != Value::Null, "{secret}");
    }
}

#[test]
fn a_form_cut_by_a_truncation_is_replaced() {
    let secret = "s3cr3t-Token-0123456789";
    let scrubber = bearer(secret);
    let cut = |n: usize| &secret[..n];
    for (text, expected) in [
        (
            format!("HTTP 401: Bearer {}…", cut(10)),
            "HTTP 401: Bearer [redacted]…".to_owned(),
        ),
        (
            format!("HTTP 401: Bearer {}… (when initializing)", cut(10)),
            "HTTP 401: Bearer [redacted]… (when initializing)".to_owned(),
        ),
        (
            format!("ends with {}", cut(6)),
            "ends with [redacted]".to_owned(),
        ),
        // Fewer than four bytes of the secret are left alone.
        (
            format!("ends with {}", cut(3)),
            format!("ends with {}", cut(3)),
        ),
        (
            format!("whole {secret} and cut {}…", cut(12)),
            "whole [redacted] and cut [redacted]…".to_owned(),
        ),
    ] {
        assert_eq!(scrubber.text(&text), expected);
    }
}

proptest! {
    /// Whatever the secret, its echo through serde_json (as a value, after a prefix, and inside
    /// a JSON text inside a string), percent-encoded, and in a Basic header never reaches the
    /// agent: no text between two markers contains it.
    #[test]
    fn json_escaped_and_encoded_echoes_are_scrubbed(secret in "(?s).{4,40}") {
        prop_assume!(secret.len() >= 4);
        let scrubber = Scrubber::new(&[
            Sent::Prefixed { prefix: "Bearer ", secret: secret.as_bytes() },
            Sent::Basic { username: "writ", secret: secret.as_bytes() },
        ]).unwrap();
        let inner = serde_json::to_string(&json!({"authorization": format!("Bearer {secret}")})).unwrap();
        let echo = serde_json::to_vec(&json!({
            "value": secret,
            "header": format!("Bearer {secret}"),
            "log": inner,
            "url": format!("https://x.test/?t={}", utf8_percent_encode(&secret, NON_ALPHANUMERIC)),
            "basic": format!("Basic {}", STANDARD.encode(format!("writ:{secret}"))),
        })).unwrap();
        let (body, found) = scrubber.response(&echo);
        prop_assert!(found);
        prop_assert!(body.is_object());
        let escaped = serde_json::to_string(&secret).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        let text = body.to_string();
        for piece in text.split(MARKER) {
            prop_assert!(!piece.contains(&secret), "{}", text);
            prop_assert!(!piece.contains(escaped), "{}", text);
        }
        for (_, v) in body.as_object().unwrap() {
            for piece in v.as_str().unwrap().split(MARKER) {
                prop_assert!(!piece.contains(&secret), "{}", text);
            }
        }
    }
}

#[test]
fn json_text_inside_json_strings_is_scrubbed_at_any_depth() {
    let secret = "q\"uo\\te/é";
    let scrubber = bearer(secret);
    let mut value = json!({"k": secret});
    for _ in 0..4 {
        value = json!({"text": value.to_string()});
    }
    let raw = serde_json::to_vec(&value).unwrap();
    let (mut body, found) = scrubber.response(&raw);
    assert!(found);
    for _ in 0..4 {
        body = serde_json::from_str(body["text"].as_str().unwrap()).unwrap();
    }
    assert_eq!(body, json!({"k": "[redacted]"}));
}
