//! A small client of a running `writ serve`: the commands that act through the HTTP API
//! (`writ actions`, `writ approvals`) use it instead of opening the store.
//!
//! The bearer credential comes from `--token` or `WRIT_TOKEN` and goes only into the
//! `Authorization` header: it is never printed, logged or put in an error message.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::Value;

/// How long a request may take on top of any `wait` the server is asked for.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A bearer credential. Its `Debug` hides the value so that no derived `Debug` can leak it.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([hidden])")
    }
}

impl FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Token, Self::Err> {
        Ok(Token(s.trim().to_owned()))
    }
}

/// Where the server is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The URL of the Writ server.
    #[arg(
        long,
        global = true,
        env = "WRIT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The bearer credential: a user API key (approvals, and actions of your agents), an agent
    /// API key or a delegated token (that agent's actions).
    #[arg(long, global = true, env = "WRIT_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
}

/// A client of one server with one credential.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    /// `base` without credentials, for messages.
    shown: String,
    token: Option<Token>,
    timeout: Duration,
}

impl Client {
    /// A client whose requests time out after 30 s plus `wait` (the server-side wait asked for).
    pub fn new(args: &ServerArgs, wait: Duration) -> anyhow::Result<Client> {
        let base = reqwest::Url::parse(args.url.trim()).map_err(|e| {
            // The value is not echoed: it could be a token pasted in the wrong place.
            anyhow!("--url/WRIT_URL is not a URL ({e}); use e.g. http://127.0.0.1:8080")
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--url/WRIT_URL must be an http:// or https:// URL, like http://127.0.0.1:8080");
        }
        let timeout = TIMEOUT + wait;
        // Messages name the server; a password in the URL must not go with it.
        let mut shown = base.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("writ-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base,
            shown: shown.to_string(),
            token: args.token.clone().filter(|t| !t.0.is_empty()),
            timeout,
        })
    }

    /// The URL of the API path made of `segments`, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("{} cannot be a base URL", self.shown))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `GET` of an API path, with query parameters; the JSON body of the answer.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        let request = self.http.get(self.url(segments)?).query(query);
        self.send(request).await
    }

    /// `POST` of a JSON body to an API path; the JSON body of the answer.
    pub async fn post(&self, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        let request = self.http.post(self.url(segments)?).json(body);
        self.send(request).await
    }

    /// `DELETE` of an API path; the JSON body of the answer.
    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        let request = self.http.delete(self.url(segments)?);
        self.send(request).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(&token.0);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return body.ok_or_else(|| {
                anyhow!(
                    "Writ at {} answered {status} with a body that is not JSON",
                    self.shown
                )
            });
        }
        match body {
            Some(Value::Object(map)) => {
                // `{error, message}` is an API error. Any other object is an answer whose status
                // carries meaning (an action view answers 202 pending, 403 denied, 502 failed).
                if let (Some(Value::String(code)), Some(Value::String(message))) =
                    (map.get("error"), map.get("message"))
                    && !map.contains_key("action_id")
                {
                    let hint = if status.as_u16() == 401 && self.token.is_none() {
                        " (set WRIT_TOKEN or pass --token)"
                    } else {
                        ""
                    };
                    bail!("{} {code}: {message}{hint}", status.as_u16());
                }
                Ok(Value::Object(map))
            }
            _ => {
                let excerpt: String = text.chars().take(200).collect();
                bail!(
                    "Writ at {} answered {status}: {}",
                    self.shown,
                    excerpt.trim()
                )
            }
        }
    }

    /// A failure to talk to the server at all, with what to do about it.
    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_timeout() {
            return anyhow!(
                "Writ at {} did not answer within {} s",
                self.shown,
                self.timeout.as_secs()
            );
        }
        // The innermost cause says why ("Connection refused"); reqwest's own text only says
        // that sending failed.
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        if e.is_connect() {
            anyhow!(
                "cannot reach Writ at {}: {cause}; is `writ serve` running?",
                self.shown
            )
        } else {
            anyhow!("talking to Writ at {} failed: {cause}", self.shown)
        }
    }
}

/// Text of a JSON value for a table cell: strings bare, null as `-`.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An RFC 3339 time to the second (`2026-11-26T13:54:27Z`), for tables.
pub fn short_time(v: Option<&Value>) -> String {
    let text = cell(v);
    match text.get(..19) {
        Some(head) if text.len() > 20 && text.ends_with('Z') => format!("{head}Z"),
        _ => text,
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(headers.to_vec())];
    for row in rows {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines.join("\n")
}
