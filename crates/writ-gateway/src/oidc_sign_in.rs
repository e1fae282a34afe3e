//! Signing people in with an OpenID Connect issuer (the authorization code flow with PKCE): the
//! issuer's endpoints (configured, or from its discovery document), Writ's client at it, and the
//! exchange of an authorization code for the ID token, which the issuer's [`OidcVerifier`] then
//! checks. The browser's side (the redirect, the pending sign-in in a cookie, the callback) is
//! the console's. Nothing secret is logged or returned: not the code, the tokens nor the client
//! secret.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header;
use serde_json::Value;
use writ_identity::oidc::OidcVerifier;
use writ_vault::Secret;

use crate::config::{OidcConsoleConfig, OidcIssuerConfig};
use crate::gateway::Gateway;

/// The longest the token endpoint (or the discovery document) may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the issuer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where the client secret comes from; it is read when needed and never shown.
enum ClientSecret {
    None,
    Env(Secret),
    Vault(String),
}

/// One issuer people can sign in to the console with.
pub struct OidcSignIn {
    /// What the sign-in page calls it.
    pub name: String,
    client_id: String,
    authorization_endpoint: String,
    token_endpoint: String,
    scope: String,
    secret: ClientSecret,
    /// The issuer's verifier, with the client id as the audience.
    verifier: OidcVerifier,
}

impl OidcSignIn {
    /// The issuer this sign-in is for.
    pub fn issuer(&self) -> &str {
        &self.verifier.config.issuer
    }

    /// Writ's client id at the issuer.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where the browser is sent to sign in.
    pub fn authorization_endpoint(&self) -> &str {
        &self.authorization_endpoint
    }

    /// The scopes asked for, space-separated.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The issuer's ID-token verifier, with the client id as the audience.
    pub fn verifier(&self) -> &OidcVerifier {
        &self.verifier
    }

    /// The sign-in of one configured issuer: its endpoints as configured or from its discovery
    /// document, and its client secret from the environment (read now) or the vault (read at
    /// each sign-in). `verifier` holds the issuer's keys, fetched at start.
    pub async fn new(
        issuer: &OidcIssuerConfig,
        console: &OidcConsoleConfig,
        verifier: &OidcVerifier,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OidcSignIn, String> {
        let secret = match (
            &console.client_secret_env,
            &console.client_secret_credential,
        ) {
            (Some(var), _) => match env(var) {
                Some(value) if !value.is_empty() => ClientSecret::Env(Secret::new(value.into())),
                _ => {
                    return Err(format!(
                        "the client secret's environment variable {var} is not set"
                    ));
                }
            },
            (None, Some(name)) => ClientSecret::Vault(name.clone()),
            (None, None) => ClientSecret::None,
        };
        let (authorization_endpoint, token_endpoint) =
            match (&console.authorization_endpoint, &console.token_endpoint) {
                (Some(a), Some(t)) => (a.clone(), t.clone()),
                (a, t) => {
                    let (da, dt) = discover(&issuer.issuer).await?;
                    (a.clone().unwrap_or(da), t.clone().unwrap_or(dt))
                }
            };
        let mut verifier = verifier.clone();
        verifier.config.audience = console.client_id.clone();
        Ok(OidcSignIn {
            name: console.name.trim().to_owned(),
            client_id: console.client_id.clone(),
            authorization_endpoint,
            token_endpoint,
            scope: console.scopes.join(" "),
            secret,
            verifier,
        })
    }
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer.
async fn bounded_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The authorization and token endpoints from `<issuer>/.well-known/openid-configuration`.
async fn discover(issuer: &str) -> Result<(String, String), String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let err = |m: String| format!("discovery at {url}: {m}");
    if !crate::config::secure_url(&url) {
        return Err(err(
            "the issuer must be https:// (http:// only on loopback)".into(),
        ));
    }
    let resp = http_client()
        .map_err(err)?
        .get(&url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let doc: Value = serde_json::from_slice(&bounded_body(resp).await.map_err(err)?)
        .map_err(|e| err(e.to_string()))?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(err("the document names another issuer".into()));
    }
    let endpoint = |key: &str| {
        doc.get(key)
            .and_then(Value::as_str)
            .filter(|u| crate::config::secure_url(u))
            .map(str::to_owned)
            .ok_or_else(|| err(format!("{key} is missing or not https://")))
    };
    Ok((
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
    ))
}

impl OidcSignIn {
    /// Exchanges the code at the token endpoint; the ID token, or why not (never secret).
    pub async fn redeem(
        &self,
        gw: &Gateway,
        redirect_uri: &str,
        code: &str,
        code_verifier: &str,
    ) -> Result<String, String> {
        let provider = self;
        let form = url_encode(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", &provider.client_id),
            ("code_verifier", code_verifier),
        ]);
        let secret = match &provider.secret {
            ClientSecret::None => None,
            ClientSecret::Env(s) => Some(s.expose().to_vec()),
            ClientSecret::Vault(name) => Some(
                crate::pipeline::open_credential(gw.db.as_ref(), &gw.master_key, name, None)
                    .await?
                    .0
                    .expose()
                    .to_vec(),
            ),
        };
        let mut request = http_client()?
            .post(&provider.token_endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(form);
        if let Some(secret) = secret {
            // client_secret_basic (RFC 6749 §2.3.1): both parts form-encoded, then Basic.
            let secret = String::from_utf8(secret)
                .map_err(|_| "the client secret is not UTF-8 text".to_owned())?;
            let enc = |s: &str| {
                serde_urlencoded::to_string([("", s)])
                    .map(|t| t.trim_start_matches('=').to_owned())
                    .unwrap_or_default()
            };
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&provider.client_id),
                enc(&secret)
            ));
            request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let resp = request
            .send()
            .await
            .map_err(|e| format!("token endpoint unreachable: {}", e.without_url()))?;
        let status = resp.status();
        let body = bounded_body(resp)
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = answer
                .get("error")
                .and_then(Value::as_str)
                .map(oauth_code)
                .unwrap_or_else(|| "no error code".to_owned());
            return Err(format!("token endpoint answered HTTP {status} ({code})"));
        }
        answer
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "the token endpoint's answer has no id_token".to_owned())
    }
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// An OAuth error code as the issuer sent it, if it looks like one (RFC 6749 allows only
/// printable ASCII); anything else is not shown.
pub fn oauth_code(text: &str) -> String {
    if !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        text.to_owned()
    } else {
        "an unreadable error".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_error_codes_are_shown() {
        assert_eq!(oauth_code("access_denied"), "access_denied");
        assert_eq!(oauth_code("<script>"), "an unreadable error");
        assert_eq!(oauth_code(""), "an unreadable error");
    }
}
