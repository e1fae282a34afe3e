//! Typed constraints on an action's arguments, each at a JSON pointer, and the glob patterns
//! used for actions, resources and strings.
//!
//! Every check fails closed: a missing argument, a value of the wrong type (a number sent as a
//! string), an e-mail address that is not a plain `local@domain` (or has a non-ASCII look-alike
//! domain), or a value that cannot be compared is a denial with a sentence saying why, never a
//! pass.

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
    /// A number ≤ this. An upper bound alone lets any negative number through: for an amount,
    /// use `range` with `min` too.
    AtMost { value: serde_json::Number },
    /// A number ≥ this.
    AtLeast { value: serde_json::Number },
    /// A number within `min` and `max`, both inclusive; either may be left out, not both.
    /// Serialized as `{"pointer": "/amount_cents", "rule": "range", "min": 1, "max": 500000}`.
    Range {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<serde_json::Number>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<serde_json::Number>,
    },
    /// Text matching this glob (`*` any run without `/`, `**` any run, `?` one character);
    /// for a list, every element must match.
    Glob { pattern: String },
    /// An e-mail address (or list of them) whose domain is one of these: `example.com` exactly,
    /// or `*.example.com` for its subdomains. Addresses are read strictly, with no looser
    /// form to opt into: a plain RFC 5322 `local@domain` whose local part is a dot-atom without
    /// `%` or `!` (which some mail servers treat as a route to another host), and whose domain is
    /// an ASCII domain name. Quoted local parts, comments, display names, several `@`, empty
    /// labels, stray dots, whitespace and IP addresses are refused; an agent has no need for
    /// them, and each is a way to make a mail server deliver elsewhere than the domain checked.
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
            Rule::AtMost { .. } | Rule::AtLeast { .. } | Rule::Range { .. } => {
                let (min, max) = self.rule.bounds();
                if min.is_none() && max.is_none() {
                    return bad("range needs \"min\", \"max\" or both".into());
                }
                for value in min.into_iter().chain(max) {
                    if value.as_f64().is_none_or(|f| !f.is_finite()) {
                        return bad(format!("{value} is not a usable bound"));
                    }
                }
                if let (Some(min), Some(max)) = (min, max)
                    && num_cmp(min, max) == Some(std::cmp::Ordering::Greater)
                {
                    return bad(format!(
                        "the minimum {min} is greater than the maximum {max}, so nothing would be allowed"
                    ));
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
            Rule::AtMost { .. } | Rule::AtLeast { .. } | Rule::Range { .. } => {
                let (min, max) = self.rule.bounds();
                within(p, v, min, max)
            }
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

impl Rule {
    /// The inclusive lower and upper bounds of a numeric rule (`at_most`, `at_least`, `range`).
    pub fn bounds(&self) -> (Option<&serde_json::Number>, Option<&serde_json::Number>) {
        match self {
            Rule::AtMost { value } => (None, Some(value)),
            Rule::AtLeast { value } => (Some(value), None),
            Rule::Range { min, max } => (min.as_ref(), max.as_ref()),
            _ => (None, None),
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

/// The argument a pointer names, as a user writes it: `amount_cents` for `/amount_cents`.
fn argument_name(pointer: &str) -> &str {
    match pointer.strip_prefix('/') {
        Some(name) => name,
        None => "the arguments",
    }
}

/// A number as a person writes it: `-0.000001` rather than `-1e-6` where it is an exact amount.
fn decimal(n: &serde_json::Number) -> String {
    Amount::from_json(n).map_or_else(|_| n.to_string(), |a| a.to_string())
}

/// Checks a number against inclusive bounds; the denial names the bound that failed.
fn within(
    p: &str,
    v: &Value,
    min: Option<&serde_json::Number>,
    max: Option<&serde_json::Number>,
) -> Result<(), String> {
    use std::cmp::Ordering::{Greater, Less};
    let Value::Number(n) = v else {
        return Err(format!("{p} must be a number, but it is {}", type_name(v)));
    };
    let name = argument_name(p);
    for (bound, refused, words) in [
        (min, Less, "below the grant's minimum"),
        (max, Greater, "above the grant's maximum"),
    ] {
        let Some(bound) = bound else { continue };
        match num_cmp(n, bound) {
            Some(o) if o == refused => {
                return Err(format!(
                    "{name} {} is {words} {}",
                    decimal(n),
                    decimal(bound)
                ));
            }
            Some(_) => {}
            None => return Err(format!("{p} is {n}, which cannot be compared with {bound}")),
        }
    }
    Ok(())
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
    if host.bytes().any(|b| b.is_ascii_uppercase()) || !host.is_ascii() {
        return Err(format!(
            "{d:?} is not a lower-case ASCII domain (write IDNs in their xn-- form)"
        ));
    }
    match domain_problem(host) {
        None => Ok(()),
        Some(why) => Err(format!("{d:?} is not a domain: it {why}")),
    }
}

/// What is wrong with an ASCII, lower-case domain name, if anything (`"has an empty label"`).
fn domain_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("is empty".into());
    }
    if host.starts_with('[') {
        return Some("is an IP address literal; only domain names are accepted".into());
    }
    if host.len() > 253 {
        return Some("is longer than 253 characters".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Some("has an empty label (a leading, trailing or doubled dot)".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(format!(
            "contains {c:?}; a domain name has letters, digits, '-' and dots"
        ));
    }
    if labels
        .iter()
        .any(|l| l.starts_with('-') || l.ends_with('-'))
    {
        return Some("has a label that begins or ends with '-'".into());
    }
    if labels.iter().any(|l| l.len() > 63) {
        return Some("has a label longer than 63 characters".into());
    }
    // A top-level domain is never all digits: `10.0.0.1` is an IP address, not a name.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("is an IP address; only domain names are accepted".into());
    }
    None
}

/// Characters a plain local part may hold besides letters, digits and dots: RFC 5322's `atext`
/// without `%` and `!`.
const LOCAL_PUNCTUATION: &[u8] = b"#$&'*+-/=?^_`{|}~";

/// Reads `address` as a plain `local@domain`: the local part, and the domain in lower case. `Err`
/// says what is wrong, as the end of a sentence starting with the address.
fn parse_email_address(address: &str) -> Result<(&str, String), String> {
    if !address.is_ascii() {
        return Err(
            "which contains non-ASCII characters (a look-alike of an allowed domain is refused)"
                .into(),
        );
    }
    if address
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(
            "which contains whitespace or control characters; only a plain address local@domain is accepted"
                .into(),
        );
    }
    if address.len() > 254 {
        return Err("which is longer than 254 characters".into());
    }
    if address.contains(['(', ')']) {
        return Err("which contains a comment in parentheses; comments are not accepted".into());
    }
    let (local, domain) = match address.split_once('@') {
        None => return Err("which is not an e-mail address (it has no '@')".into()),
        Some((_, rest)) if rest.contains('@') => {
            return Err(
                "which has more than one '@'; only a plain address local@domain is accepted".into(),
            );
        }
        Some(parts) => parts,
    };
    if local.contains('"') {
        return Err("whose local part is quoted; only an unquoted local part is accepted".into());
    }
    if local.contains('%') {
        return Err(
            "whose local part contains '%', which some mail servers route to another domain".into(),
        );
    }
    if local.contains('!') {
        return Err(
            "whose local part contains '!', which some mail servers route to another host (a bang path)"
                .into(),
        );
    }
    if local.is_empty() {
        return Err("whose local part (before the '@') is empty".into());
    }
    if local.split('.').any(str::is_empty) {
        return Err("whose local part begins or ends with a dot or has two dots in a row".into());
    }
    if let Some(c) = local.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || *c == '.' || LOCAL_PUNCTUATION.contains(&(*c as u8)))
    }) {
        return Err(format!(
            "whose local part contains {c:?}, which a plain address does not have"
        ));
    }
    if local.len() > 64 {
        return Err("whose local part is longer than 64 characters".into());
    }
    let domain = domain.to_ascii_lowercase();
    match domain_problem(&domain) {
        Some(why) => Err(format!("whose domain {why}")),
        None => Ok((local, domain)),
    }
}

fn email_domain_allowed(p: &str, address: &str, domains: &[String]) -> Result<(), String> {
    let shown = show(&Value::String(address.to_owned()));
    let (_, domain) =
        parse_email_address(address).map_err(|why| format!("{p} is {shown}, {why}"))?;
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
mod tests;
