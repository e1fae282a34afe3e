//! Typed constraints on an action's arguments, each at a JSON pointer, and the glob patterns
//! used for actions, resources and strings.
//!
//! Every check fails closed: a missing argument, a value of the wrong type (a number sent as a
//! string), a non-ASCII e-mail domain, or a value too large to compare exactly is a denial with a
//! sentence saying why, never a pass.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IdentityError;
use crate::amount::Amount;

/// Longest pattern and longest matched value (in characters): bounds the matcher's work.
const MAX_PATTERN_LEN: usize = 256;
const MAX_MATCH_LEN: usize = 4096;

/// One rule applied to the argument at `pointer` (RFC 6901, e.g. `/amount`, `/to/0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, Value>")]
pub struct Constraint {
    pub pointer: String,
    #[serde(flatten)]
    pub rule: Rule,
}

/// What the argument must satisfy. Serialized as `{"pointer": "/amount", "rule": "at_most",
/// "value": 500}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Equal to this JSON value (numbers compare by value: `5` equals `5.0`).
    Equals { value: Value },
    /// Equal to one of these values.
    OneOf { values: Vec<Value> },
    /// A number ≤ this.
    AtMost { value: serde_json::Number },
    /// A number ≥ this.
    AtLeast { value: serde_json::Number },
    /// Text matching this glob (`*` any run without `/`, `**` any run, `?` one character);
    /// for a list, every element must match.
    Glob { pattern: String },
    /// An e-mail address (or list of them) whose domain is one of these: `example.com` exactly,
    /// or `*.example.com` for its subdomains.
    EmailDomainIn { domains: Vec<String> },
    /// Text of at most this many characters, or a list of at most this many elements.
    MaxLength { max: usize },
}

/// Parsed by hand so that an unknown field (a typo such as `"max": 500` for `at_most`) is an
/// error rather than silently ignored; serde's `flatten` cannot deny unknown fields.
impl TryFrom<serde_json::Map<String, Value>> for Constraint {
    type Error = String;
    fn try_from(mut map: serde_json::Map<String, Value>) -> Result<Self, String> {
        let pointer = match map.remove("pointer") {
            Some(Value::String(p)) => p,
            Some(_) => return Err("a constraint's \"pointer\" must be text".into()),
            None => return Err("a constraint needs a \"pointer\" (like \"/amount\")".into()),
        };
        let rule: Rule = serde_json::from_value(Value::Object(map))
            .map_err(|e| format!("constraint at {pointer}: {e}"))?;
        Ok(Constraint { pointer, rule })
    }
}

impl Constraint {
    /// Checks the constraint itself when a grant is created.
    pub fn validate(&self) -> Result<(), IdentityError> {
        validate_pointer(&self.pointer)?;
        let bad = |m: String| {
            Err(IdentityError::InvalidGrant(format!(
                "constraint at {}: {m}",
                self.pointer
            )))
        };
        match &self.rule {
            Rule::OneOf { values } if values.is_empty() => {
                bad("one_of needs at least one value".into())
            }
            Rule::Glob { pattern } => validate_glob(pattern).or_else(&bad),
            Rule::EmailDomainIn { domains } => {
                if domains.is_empty() {
                    return bad("email_domain_in needs at least one domain".into());
                }
                for d in domains {
                    validate_domain_pattern(d).or_else(&bad)?;
                }
                Ok(())
            }
            Rule::AtMost { value } | Rule::AtLeast { value } => {
                if value.as_f64().is_none_or(|f| !f.is_finite()) {
                    return bad(format!("{value} is not a usable bound"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Checks `arguments`; `Err` is a sentence a user understands.
    pub fn check(&self, arguments: &Value) -> Result<(), String> {
        let p = &self.pointer;
        let Some(v) = arguments.pointer(p) else {
            return Err(format!(
                "the argument {p} is missing, and this grant requires it"
            ));
        };
        match &self.rule {
            Rule::Equals { value } => {
                if json_equal(v, value) {
                    Ok(())
                } else {
                    Err(format!("{p} must be {value}, but it is {}", show(v)))
                }
            }
            Rule::OneOf { values } => {
                if values.iter().any(|x| json_equal(v, x)) {
                    Ok(())
                } else {
                    Err(format!(
                        "{p} is {}, which is not one of the allowed values {}",
                        show(v),
                        Value::Array(values.clone())
                    ))
                }
            }
            Rule::AtMost { value } => compare(p, v, value, std::cmp::Ordering::Greater, "at most"),
            Rule::AtLeast { value } => compare(p, v, value, std::cmp::Ordering::Less, "at least"),
            Rule::Glob { pattern } => each_text(p, v, |s| {
                if glob_match(pattern, s) {
                    Ok(())
                } else {
                    Err(format!("{p} is {s:?}, which does not match {pattern:?}"))
                }
            }),
            Rule::EmailDomainIn { domains } => {
                each_text(p, v, |s| email_domain_allowed(p, s, domains))
            }
            Rule::MaxLength { max } => {
                let len = match v {
                    Value::String(s) => s.chars().count(),
                    Value::Array(a) => a.len(),
                    other => {
                        return Err(format!(
                            "{p} must be text or a list, but it is {}",
                            type_name(other)
                        ));
                    }
                };
                if len <= *max {
                    Ok(())
                } else {
                    Err(format!(
                        "{p} has {len} characters or elements; the limit is {max}"
                    ))
                }
            }
        }
    }
}

/// A JSON pointer: empty (the whole arguments) or `/`-separated tokens with valid `~` escapes.
pub fn validate_pointer(pointer: &str) -> Result<(), IdentityError> {
    let bad = |why: &str| {
        Err(IdentityError::InvalidGrant(format!(
            "{pointer:?} is not a JSON pointer: {why}"
        )))
    };
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return bad("it must start with '/' (for example /amount)");
    }
    if pointer.len() > MAX_PATTERN_LEN {
        return bad("it is too long");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return bad("'~' must be followed by 0 or 1");
        }
    }
    Ok(())
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// JSON equality where numbers compare by value.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(std::cmp::Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_equal(a, b)))
        }
        _ => a == b,
    }
}

/// Exact comparison when both fit the six-decimal fixed point, else by double.
fn num_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    match (Amount::from_json(a), Amount::from_json(b)) {
        (Ok(x), Ok(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn compare(
    p: &str,
    v: &Value,
    bound: &serde_json::Number,
    refused: std::cmp::Ordering,
    words: &str,
) -> Result<(), String> {
    let Value::Number(n) = v else {
        return Err(format!("{p} must be a number, but it is {}", type_name(v)));
    };
    match num_cmp(n, bound) {
        Some(o) if o != refused => Ok(()),
        Some(_) => Err(format!("{p} is {n}, but this grant allows {words} {bound}")),
        None => Err(format!("{p} is {n}, which cannot be compared with {bound}")),
    }
}

/// Applies a text check to a string, or to every element of a list of strings.
fn each_text(
    p: &str,
    v: &Value,
    mut f: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), String> {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => f(s)?,
                    other => {
                        return Err(format!(
                            "{p}/{i} must be text, but it is {}",
                            type_name(other)
                        ));
                    }
                }
            }
            Ok(())
        }
        Value::Array(_) => Err(format!("{p} is an empty list")),
        other => Err(format!("{p} must be text, but it is {}", type_name(other))),
    }
}

fn validate_domain_pattern(d: &str) -> Result<(), String> {
    let host = d.strip_prefix("*.").unwrap_or(d);
    if is_ascii_domain(host) {
        Ok(())
    } else {
        Err(format!(
            "{d:?} is not a lower-case ASCII domain (write IDNs in their xn-- form)"
        ))
    }
}

fn is_ascii_domain(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn email_domain_allowed(p: &str, address: &str, domains: &[String]) -> Result<(), String> {
    let shown = show(&Value::String(address.to_owned()));
    if !address.is_ascii() {
        return Err(format!(
            "{p} is {shown}, which contains non-ASCII characters (a look-alike of an allowed domain is refused)"
        ));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{p} is {shown}, which is not an e-mail address"));
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let domain = domain.to_ascii_lowercase();
    if !local_ok || !is_ascii_domain(&domain) {
        return Err(format!(
            "{p} is {shown}, which is not a plain e-mail address"
        ));
    }
    let allowed = domains.iter().any(|d| match d.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => domain == *d,
    });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{p} is {shown}, whose domain {domain} is not among the allowed domains {}",
            domains.join(", ")
        ))
    }
}

/// Checks a glob pattern when a grant is created.
pub fn validate_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a pattern must not be empty".into());
    }
    if pattern.chars().count() > MAX_PATTERN_LEN {
        return Err(format!(
            "pattern {pattern:?} is longer than {MAX_PATTERN_LEN} characters"
        ));
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!("pattern {pattern:?} contains control characters"));
    }
    Ok(())
}

/// Glob match: `**` any run of characters, `*` any run without `/`, `?` one character other
/// than `/`. Runs in O(pattern × value) and refuses values over 4,096 characters.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Lit(char),
        One,
        Star,
        DoubleStar,
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Tok::DoubleStar
            }
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = value.chars().collect();
    if text.len() > MAX_MATCH_LEN || toks.len() > MAX_PATTERN_LEN {
        return false;
    }
    // reach[j]: the pattern prefix consumed so far can end at text position j.
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for tok in toks {
        let mut next = vec![false; text.len() + 1];
        match tok {
            Tok::Lit(c) => {
                for j in 0..text.len() {
                    next[j + 1] = reach[j] && text[j] == c;
                }
            }
            Tok::One => {
                for j in 0..text.len() {
                    next[j + 1] = reach[j] && text[j] != '/';
                }
            }
            Tok::Star | Tok::DoubleStar => {
                let crosses = matches!(tok, Tok::DoubleStar);
                let mut carry = false;
                for j in 0..=text.len() {
                    carry = reach[j] || (carry && j > 0 && (crosses || text[j - 1] != '/'));
                    next[j] = carry;
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn c(pointer: &str, rule: Value) -> Constraint {
        let mut obj = rule;
        obj["pointer"] = json!(pointer);
        serde_json::from_value(obj).unwrap()
    }

    /// Each row: constraint, arguments, expected outcome (None = allowed, Some(words) = denied
    /// with a message containing the words).
    #[test]
    fn table() {
        let cases: Vec<(Constraint, Value, Option<&str>)> = vec![
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 500}),
                None,
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 500.0}),
                None,
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 500.000001}),
                Some("at most 500"),
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": "100"}),
                Some("must be a number, but it is text"),
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({}),
                Some("missing"),
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": null}),
                Some("must be a number"),
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 1e300}),
                Some("at most 500"),
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": -1e300}),
                None,
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 18446744073709551615u64}),
                Some("at most"),
            ),
            (
                c("/amount", json!({"rule": "at_least", "value": 0})),
                json!({"amount": -0.000001}),
                Some("at least 0"),
            ),
            (
                c("/amount", json!({"rule": "at_least", "value": 0})),
                json!({"amount": 0}),
                None,
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@example.com"}),
                None,
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@EXAMPLE.com"}),
                None,
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@exаmple.com"}),
                Some("non-ASCII"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@example.com.evil.io"}),
                Some("not among"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@evil-example.com"}),
                Some("not among"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@sub.example.com"}),
                Some("not among"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["*.example.com"]}),
                ),
                json!({"to": "bob@sub.example.com"}),
                None,
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["*.example.com"]}),
                ),
                json!({"to": "bob@xexample.com"}),
                Some("not among"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "evil@x.io <bob@example.com>"}),
                Some("not a plain"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "bob@example.com@evil.io"}),
                Some("not"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": "example.com"}),
                Some("not an e-mail"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": ["a@example.com", "b@example.com"]}),
                None,
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": ["a@example.com", "b@evil.io"]}),
                Some("evil.io"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": ["a@example.com", 5]}),
                Some("/to/1 must be text"),
            ),
            (
                c(
                    "/to",
                    json!({"rule": "email_domain_in", "domains": ["example.com"]}),
                ),
                json!({"to": []}),
                Some("empty list"),
            ),
            (
                c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
                json!({"repo": "acme/widgets"}),
                None,
            ),
            (
                c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
                json!({"repo": "acme/widgets/../../evil"}),
                Some("does not match"),
            ),
            (
                c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
                json!({"repo": "acmecorp/x"}),
                Some("does not match"),
            ),
            (
                c("/repo", json!({"rule": "glob", "pattern": "acme/**"})),
                json!({"repo": "acme/a/b"}),
                None,
            ),
            (
                c("/env", json!({"rule": "equals", "value": "staging"})),
                json!({"env": "staging"}),
                None,
            ),
            (
                c("/env", json!({"rule": "equals", "value": "staging"})),
                json!({"env": "Staging"}),
                Some("must be \"staging\""),
            ),
            (
                c("/n", json!({"rule": "equals", "value": 5})),
                json!({"n": "5"}),
                Some("must be 5"),
            ),
            (
                c(
                    "/env",
                    json!({"rule": "one_of", "values": ["dev", "staging"]}),
                ),
                json!({"env": "prod"}),
                Some("not one of"),
            ),
            (
                c("/body", json!({"rule": "max_length", "max": 3})),
                json!({"body": "héé"}),
                None,
            ),
            (
                c("/body", json!({"rule": "max_length", "max": 3})),
                json!({"body": "abcd"}),
                Some("limit is 3"),
            ),
            (
                c("/body", json!({"rule": "max_length", "max": 3})),
                json!({"body": 1234}),
                Some("text or a list"),
            ),
            (
                c("/a~1b", json!({"rule": "equals", "value": 1})),
                json!({"a/b": 1}),
                None,
            ),
            (
                c("/amount", json!({"rule": "at_most", "value": 500})),
                json!({"amount": 400, "extra": "ignored"}),
                None,
            ),
        ];
        for (i, (constraint, args, expected)) in cases.iter().enumerate() {
            constraint.validate().unwrap();
            let got = constraint.check(args);
            match (expected, &got) {
                (None, Ok(())) => {}
                (Some(words), Err(msg)) if msg.contains(words) => {}
                _ => {
                    panic!("case {i}: {constraint:?} on {args}: expected {expected:?}, got {got:?}")
                }
            }
        }
    }

    #[test]
    fn invalid_constraints_are_refused_at_creation() {
        for bad in [
            c("amount", json!({"rule": "at_most", "value": 1})),
            c("/a~2", json!({"rule": "at_most", "value": 1})),
            c("/to", json!({"rule": "email_domain_in", "domains": []})),
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["exаmple.com"]}),
            ),
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["Example.com"]}),
            ),
            c("/x", json!({"rule": "one_of", "values": []})),
            c("/x", json!({"rule": "glob", "pattern": ""})),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let unknown: Result<Constraint, _> = serde_json::from_value(
            json!({"pointer": "/a", "rule": "at_most", "value": 1, "typo": 2}),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn globs() {
        for (p, v, m) in [
            ("github.*", "github.create_issue", true),
            ("a*b", "ab", true),
            ("a*b", "a/b", false),
            ("a**b", "a/x/b", true),
            ("?", "é", true),
            ("?", "", false),
            ("*", "", true),
            ("x", "xx", false),
        ] {
            assert_eq!(glob_match(p, v), m, "{p} {v}");
        }
        assert!(!glob_match("**", &"a".repeat(MAX_MATCH_LEN + 1)));
    }

    proptest! {
        /// A value matches a pattern made of itself with every character replaced by `?` or
        /// kept, and the literal pattern matches only itself.
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z/.]{0,20}", b in "[a-z/.]{0,20}") {
            prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn double_star_matches_everything(v in "\\PC{0,50}") {
            prop_assert!(glob_match("**", &v));
        }

        #[test]
        fn at_most_agrees_with_exact_arithmetic(x in -1_000_000_000i64..1_000_000_000, bound in -1_000_000_000i64..1_000_000_000) {
            let v = serde_json::Number::from_f64(x as f64 / 1000.0).unwrap();
            let b = serde_json::Number::from_f64(bound as f64 / 1000.0).unwrap();
            let constraint = Constraint { pointer: "/v".into(), rule: Rule::AtMost { value: b } };
            prop_assert_eq!(constraint.check(&json!({"v": v})).is_ok(), x <= bound);
        }
    }
}
