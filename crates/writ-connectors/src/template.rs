//! Filling `{arg}` templates from arguments, and redacting JSON by pointer.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything but RFC 3986 unreserved characters is encoded, `/` included: an argument fills one
/// path segment and can never add segments, climb with `..`, or change the host.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The names of the `{placeholders}` of a template, in order; refuses unbalanced braces.
pub(crate) fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unbalanced '}}' in template {template:?}"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in template {template:?}"))?;
        let name = &after[..close];
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "invalid placeholder {{{name}}} in template {template:?}"
            ));
        }
        names.push(name.to_owned());
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// The text an argument contributes to a template: strings and numbers only.
fn scalar(args: &Value, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::String(_)) => Err(format!("argument {name:?} is empty")),
        Some(_) => Err(format!("argument {name:?} must be a string or a number")),
        None => Err(format!("argument {name:?} is missing")),
    }
}

/// Fills a template; with `encode`, each value is percent-encoded as one path segment.
pub(crate) fn fill(template: &str, args: &Value, encode: bool) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..close];
        let value = scalar(args, name)?;
        if encode && (value == "." || value == "..") {
            // URL normalisation would turn these into a move up the path.
            return Err(format!("argument {name:?} cannot be {value:?}"));
        }
        if encode {
            out.extend(utf8_percent_encode(&value, SEGMENT));
        } else {
            out.push_str(&value);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces the value at each JSON pointer (RFC 6901) with `"[redacted]"`; returns the pointers
/// that were present.
pub fn redact_pointers(value: &mut Value, pointers: &[String]) -> Vec<String> {
    let mut done = Vec::new();
    for pointer in pointers {
        if let Some(target) = value.pointer_mut(pointer) {
            *target = Value::String("[redacted]".into());
            done.push(pointer.clone());
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_one_segment_per_argument() {
        let args = json!({"owner": "acme", "repo": "../../admin", "n": 7, "q": "a b/c"});
        assert_eq!(
            fill("/repos/{owner}/{repo}/pulls/{n}", &args, true).unwrap(),
            "/repos/acme/..%2F..%2Fadmin/pulls/7"
        );
        assert_eq!(
            fill("{owner}/{repo}", &args, false).unwrap(),
            "acme/../../admin"
        );
        assert!(fill("/x/{missing}", &args, true).is_err());
        assert!(fill("/x/{d}", &json!({"d": ".."}), true).is_err());
        assert!(fill("/x/{d}", &json!({"d": "."}), true).is_err());
        assert!(fill("/x/{q", &args, true).is_err());
        assert!(fill("/{owner}", &json!({"owner": ["a"]}), true).is_err());
        assert!(fill("/{owner}", &json!({"owner": ""}), true).is_err());
        assert_eq!(placeholders("/a/{b}/c/{d_e}").unwrap(), ["b", "d_e"]);
        assert!(placeholders("/a/{b c}").is_err());
        assert!(placeholders("/a/b}").is_err());
        assert!(placeholders("/a/{}").is_err());
    }

    #[test]
    fn redaction_by_pointer() {
        let mut v = json!({"user": {"email": "a@b.c", "name": "A"}, "items": [{"token": "t"}]});
        let done = redact_pointers(
            &mut v,
            &[
                "/user/email".into(),
                "/items/0/token".into(),
                "/absent".into(),
            ],
        );
        assert_eq!(done, ["/user/email", "/items/0/token"]);
        assert_eq!(
            v,
            json!({"user": {"email": "[redacted]", "name": "A"}, "items": [{"token": "[redacted]"}]})
        );
    }
}
