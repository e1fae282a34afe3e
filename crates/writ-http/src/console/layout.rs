//! The frame every console page shares (the header, the navigation, the assets), the error
//! page, the page that moves on after an OIDC sign-in, and how a JSON value reads as text. maud
//! escapes every value; nothing here writes a style or script inline (the CSP forbids it), and
//! what the script needs travels in `data-` attributes.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::session::SignedIn;
use super::{css_url, js_url};

/// A JSON value as text: strings as they are, arrays joined by commas, null as a dash, the rest
/// as compact JSON.
pub(super) fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "—".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "—".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text(Some(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

pub(super) fn pretty(v: Option<&Value>) -> String {
    v.and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| "—".to_owned())
}

/// A text field: as it is, or a dash when it is missing or empty.
pub(super) fn or_dash(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "—",
    }
}

/// A list of words joined by commas, or a dash when it is empty.
pub(super) fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "—".to_owned();
    }
    items
        .iter()
        .map(|i| or_dash(Some(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The frame of every page.
pub(super) fn layout(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Writ" }
                link rel="stylesheet" href=(css_url());
                script src=(js_url()) defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "Writ" }
                    @if let Some(who) = who {
                        nav {
                            a href="/console/approvals" { "Approvals" }
                            a href="/console/audit" { "Audit" }
                            a href="/console/identity" { "Agents & grants" }
                            @if who.user.admin { a href="/console/policy" { "Policy" } }
                            a href="/console/account" { "Account" }
                        }
                        div.me {
                            span.user data-signed-in=(who.user.id.as_str()) {
                                (who.user.id.as_str())
                                @if who.user.admin { " (admin)" }
                            }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(who.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn error(who: Option<&SignedIn>, status: StatusCode, message: &str) -> Markup {
    layout(
        "Error",
        who,
        html! {
            section.error data-status=(status.as_u16()) {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                p.message { (message) }
                p { a href="/console/approvals" { "Back to the approvals" } }
            }
        },
    )
}

/// A page that moves on to `to` by itself (a `meta` refresh, no script), with a link for
/// browsers that do not.
pub(super) fn continue_to(to: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0; url={to}"));
                title { "Signed in · Writ" }
                link rel="stylesheet" href=(css_url());
            }
            body {
                main {
                    section.login {
                        h1 { "Signed in" }
                        p { a #continue href=(to) { "Continue to the console" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_read_as_text() {
        for (value, expected) in [
            (json!(null), "—"),
            (json!(""), "—"),
            (json!([]), "—"),
            (json!("x"), "x"),
            (json!(["a", "b"]), "a, b"),
            (json!(3), "3"),
            (json!({"k": 1}), "{\"k\":1}"),
        ] {
            assert_eq!(text(Some(&value)), expected, "{value}");
        }
        assert_eq!(text(None), "—");
    }

    #[test]
    fn fields_and_lists_read_as_text() {
        assert_eq!(or_dash(None), "—");
        assert_eq!(or_dash(Some("")), "—");
        assert_eq!(or_dash(Some("x")), "x");
        assert_eq!(list(&[]), "—");
        assert_eq!(list(&["a".to_owned(), "b".to_owned()]), "a, b");
        // The same words as the JSON value the API answers with.
        let words = vec!["a".to_owned(), String::new()];
        assert_eq!(list(&words), text(Some(&json!(words))));
    }
}
