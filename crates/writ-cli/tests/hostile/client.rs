//! How the world sends a case's requests: HTTP (with bodies and headers no polite client would
//! send), JSON-RPC to `/mcp`, console forms with a signed-in user's cookie, `writ` commands, and
//! bytes on a socket; and the answers it reads back.

use std::time::Duration;

use serde_json::{Value, json};

use super::case::{Answer, Request, parse_json};
use super::wire;
use super::world::{Vars, World};

impl World {
    /// Opens an MCP session (initialize, initialized) with `token`; its id.
    pub async fn mcp_session(&self, token: &str) -> Result<String, String> {
        let url = format!("{}/mcp", self.server.url);
        let post = |body: Value, session: Option<String>| {
            let mut req = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .json(&body);
            if let Some(s) = session {
                req = req.header("mcp-session-id", s);
            }
            req.send()
        };
        let resp = post(initialize(), None).await.map_err(|e| e.to_string())?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("initialize answered {} without a session", resp.status()))?;
        let _ = resp.text().await;
        let resp = post(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Some(session.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = resp.text().await;
        Ok(session)
    }

    /// Signs `user` in to the console with their API key (once); the session cookie and the
    /// session's CSRF token.
    pub async fn console(&self, user: &str) -> Result<(String, String), String> {
        let mut consoles = self.consoles.lock().await;
        if let Some(c) = consoles.get(user) {
            return Ok(c.clone());
        }
        let key = self
            .vars
            .get(&format!("key.{user}"))
            .ok_or_else(|| format!("no user {user}"))?;
        let base = &self.server.url;
        let page = self
            .http
            .get(format!("{base}/console/login"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let login = cookie_value(page.headers(), "writ_login")?;
        let text = page.text().await.map_err(|e| e.to_string())?;
        let csrf = csrf_of(&text)?;
        let signed = self
            .http
            .post(format!("{base}/console/login"))
            .header("cookie", format!("writ_login={login}"))
            .form(&[("csrf", csrf.as_str()), ("api_key", key.as_str())])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let session = cookie_value(signed.headers(), "writ_session")?;
        let page = self
            .http
            .get(format!("{base}/console/approvals"))
            .header("cookie", format!("writ_session={session}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let csrf = csrf_of(&page)?;
        consoles.insert(user.to_owned(), (session.clone(), csrf.clone()));
        Ok((session, csrf))
    }

    /// `${name}` replaced from `vars`; an unknown name is an error.
    pub fn expand(text: &str, vars: &Vars) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = &after[..end];
            out.push_str(
                vars.get(name)
                    .ok_or_else(|| format!("no variable {name:?}"))?,
            );
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Adds the console variables (`console.USER.cookie`, `console.USER.csrf`) that `texts`
    /// name, signing those users in.
    async fn console_vars(&self, texts: &[&str], vars: &mut Vars) -> Result<(), String> {
        for text in texts {
            let mut rest = *text;
            while let Some(start) = rest.find("${console.") {
                let after = &rest[start + 10..];
                let user = after.split('.').next().unwrap_or_default().to_owned();
                let (cookie, csrf) = self.console(&user).await?;
                vars.insert(format!("console.{user}.cookie"), cookie);
                vars.insert(format!("console.{user}.csrf"), csrf);
                rest = after;
            }
        }
        Ok(())
    }

    /// Sends `r` (every copy of it, with `times`); the answers.
    pub async fn send(&self, r: &Request, vars: &Vars) -> Result<Vec<Answer>, String> {
        let mut vars = vars.clone();
        let json_text = r.json.as_ref().map(Value::to_string);
        let mcp_text = r.mcp.as_ref().map(Value::to_string);
        let mut texts: Vec<&str> = Vec::new();
        texts.extend(r.form.as_deref());
        texts.extend(r.raw.as_deref());
        texts.extend(json_text.as_deref());
        texts.extend(r.headers.values().map(String::as_str));
        self.console_vars(&texts, &mut vars).await?;
        let x = |t: &str| World::expand(t, &vars);

        if let Some(args) = &r.cli {
            let args = args.iter().map(|a| x(a)).collect::<Result<Vec<_>, _>>()?;
            let mut cmd = self.env.writ();
            cmd.args(&args);
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let status = if out.status.success() { 200 } else { 500 };
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok(vec![Answer::text(status, text)]);
        }
        if let Some(kind) = r.tcp {
            let url = vars
                .get("slow.url")
                .ok_or("a tcp case needs the slow_server fixture")?;
            return Ok(vec![wire::slow(url, kind).await]);
        }
        if let Some(bytes) = &r.wire {
            return Ok(vec![
                wire::raw(&self.server.url, x(bytes)?.as_bytes()).await,
            ]);
        }

        let (method, path) = match (&r.req, &r.mcp) {
            (Some(req), _) => {
                let (m, p) = req
                    .split_once(' ')
                    .ok_or_else(|| format!("req {req:?}: METHOD /path"))?;
                (m.to_owned(), x(p)?)
            }
            (None, Some(_)) => ("POST".to_owned(), "/mcp".to_owned()),
            (None, None) => return Err("nothing to send".into()),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body: Option<Vec<u8>> = None;
        let mut content_type: Option<String> = None;
        if let Some(auth) = &r.auth {
            let auth = x(auth)?;
            let value = match auth.strip_prefix("raw:") {
                Some(raw) => raw.to_owned(),
                None => format!("Bearer {auth}"),
            };
            headers.push(("authorization".into(), value));
        }
        if let Some(user) = &r.cookie {
            let (cookie, _) = self.console(user).await?;
            headers.push(("cookie".into(), format!("writ_session={cookie}")));
        }
        if let Some(m) = &mcp_text {
            let mut call: Value = serde_json::from_str(&x(m)?).map_err(|e| e.to_string())?;
            let name = call["method"].as_str().unwrap_or_default().to_owned();
            if name == "initialize" && call.get("params").is_none() {
                call = initialize();
            } else {
                call["jsonrpc"] = json!("2.0");
                if !name.starts_with("notifications/") {
                    call["id"] = json!(7);
                }
            }
            headers.push((
                "accept".into(),
                "application/json, text/event-stream".into(),
            ));
            if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
                body = Some(call.to_string().into_bytes());
                content_type = Some("application/json".into());
            }
        }
        if let Some(s) = &r.session {
            headers.push(("mcp-session-id".into(), x(s)?));
        }
        if let Some(j) = &json_text {
            body = Some(x(j)?.into_bytes());
            content_type = Some("application/json".into());
        }
        if let Some(f) = &r.form {
            body = Some(x(f)?.into_bytes());
            content_type = Some("application/x-www-form-urlencoded".into());
        }
        if let Some(t) = &r.raw {
            let t = x(t)?;
            body = Some(if r.utf16 {
                t.encode_utf16().flat_map(u16::to_le_bytes).collect()
            } else {
                t.into_bytes()
            });
        }
        if let Some(n) = r.pad {
            let mut b = String::from("{\"connector\": \"github\", \"pad\": \"");
            b.push_str(&"p".repeat(n.saturating_sub(b.len() + 2)));
            b.push_str("\"}");
            body = Some(b.into_bytes());
            content_type = Some("application/json".into());
        }
        match r.content_type.as_deref() {
            Some("none") => content_type = None,
            Some(ct) => content_type = Some(ct.to_owned()),
            None => {}
        }
        if let Some(ct) = content_type {
            headers.push(("content-type".into(), ct));
        }
        for (k, v) in &r.headers {
            headers.push((k.to_lowercase(), x(v)?));
        }
        let url = format!("{}{path}", self.server.url);
        let copies = r.times.unwrap_or(1);
        let one = || {
            let mut req = self.http.request(method.clone(), &url);
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            read(req, r.stream)
        };
        let answers = futures::future::join_all((0..copies).map(|_| one())).await;
        answers.into_iter().collect()
    }
}

/// The JSON-RPC `initialize` request.
fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "1"}}})
}

/// Sends one request and reads its answer (only status and headers for a stream).
async fn read(req: reqwest::RequestBuilder, stream: bool) -> Result<Answer, String> {
    let resp = match req.send().await {
        Ok(r) => r,
        // A request the client cannot even send (a header with a newline) is an answer too.
        Err(e) if e.is_builder() => return Ok(Answer::text(0, format!("not sent: {e}"))),
        Err(e) => return Err(format!("the request failed: {e}")),
    };
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect::<Vec<_>>()
        .join("\n");
    let body = if stream {
        String::new()
    } else {
        match tokio::time::timeout(Duration::from_secs(20), resp.bytes()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Err(e)) => format!("(body unreadable: {e})"),
            Err(_) => "(body not finished within 20 s)".into(),
        }
    };
    Ok(Answer {
        status,
        headers,
        json: parse_json(&body),
        body,
    })
}

fn cookie_value(headers: &reqwest::header::HeaderMap, name: &str) -> Result<String, String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("no {name} cookie was set"))
}

fn csrf_of(page: &str) -> Result<String, String> {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| "no CSRF token on the page".to_owned())
}
