//! Console sign-in with OpenID Connect against a real identity provider: panva's `oidc-provider`
//! from npm (a certified OpenID Provider), run by node from a configuration this test writes,
//! with one confidential client that must use PKCE. The real `writ serve` binary, headless
//! Chromium over WebDriver: the sign-in page's "Sign in with …", the provider's own login and
//! consent pages, back at Writ signed in as the mapped user. Then what must be refused: a
//! callback without the browser's pending sign-in or with another `state`, a callback used twice,
//! the provider's `error=`, and an ID token whose user is not a Writ user. Last, the client
//! secret moved from the environment into the vault, and the sign-in again.
//!
//! Needs `WRIT_TEST_OIDC_PROVIDER` (the installed `oidc-provider` package directory; `.ci/run`
//! installs it), node, and Debian's `chromium` and `chromium-driver`. Without them the test
//! prints why and passes, except under CI (env `CI` set), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use browser::{CHROMEDRIVER, CHROMIUM, browser, chromedriver, text_of, wait_for};
use common::Env;
use fantoccini::Client;

/// How long to wait for anything the browser should show.
const PATIENCE: Duration = Duration::from_secs(30);
const CLIENT_SECRET: &str = "oidc-client-secret-7f3a9c";

/// Says why the test cannot run: a failure under CI, a printed reason elsewhere.
fn skip(why: &str) -> Option<()> {
    if std::env::var_os("CI").is_some() {
        panic!("under CI the console OIDC test must run: {why}");
    }
    eprintln!("skipping the console OIDC test: {why}");
    None
}

fn provider_module() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("WRIT_TEST_OIDC_PROVIDER") else {
        skip(
            "WRIT_TEST_OIDC_PROVIDER is not set (npm install --prefix .ci/npm oidc-provider@9.13.3; see .ci/run)",
        )?;
        return None;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("lib/index.js").exists() {
        skip(&format!(
            "{} is not the oidc-provider package",
            dir.display()
        ))?;
    }
    for p in [CHROMEDRIVER, CHROMIUM] {
        if !Path::new(p).exists() {
            skip(&format!(
                "{p} is not installed (apt-get install chromium chromium-driver)"
            ))?;
        }
    }
    Some(dir)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The identity provider: one confidential client (`client_secret_basic`) that must use PKCE,
/// redirecting only to Writ's callback; any login name is an account whose `sub` is that name.
const PROVIDER_JS: &str = r#"
import Provider from 'MODULE_URL';
const [port, redirect, secret] = process.argv.slice(2);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'writ-console',
    client_secret: secret,
    redirect_uris: [redirect],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: `${id}@example.com` }; } };
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['writ-test-cookie-key'] },
});
provider.listen(Number(port), '127.0.0.1');
"#;

fn start_provider(module: &Path, dir: &Path, port: u16, redirect: &str) -> Killed {
    let url = format!("file://{}/lib/index.js", module.display());
    let script = dir.join("provider.mjs");
    std::fs::write(&script, PROVIDER_JS.replace("MODULE_URL", &url)).unwrap();
    let child = Command::new("node")
        .arg(&script)
        .args([&port.to_string(), redirect, CLIENT_SECRET])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let child = Killed(child);
    wait_for_port(port, "oidc-provider");
    child
}

/// From Writ's sign-in page through the provider's login (as `login`) and consent pages.
async fn sign_in_at_provider(c: &Client, writ: &str, login: &str) {
    c.goto(&format!("{writ}/console/login")).await.unwrap();
    let start = wait_for(c, "a.oidc-start").await;
    assert_eq!(start.text().await.unwrap(), "Sign in with Test IdP");
    start.click().await.unwrap();
    wait_for(c, "input[name=login]")
        .await
        .send_keys(login)
        .await
        .unwrap();
    wait_for(c, "input[name=password]")
        .await
        .send_keys("any password")
        .await
        .unwrap();
    wait_for(c, "button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_for(c, "input[name=prompt][value=consent]").await;
    wait_for(c, "button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
}

/// Starts a sign-in without a browser: the pending cookie and the `state` sent to the provider.
async fn start_flow(http: &reqwest::Client, writ: &str) -> (String, String, String) {
    let resp = http
        .get(format!("{writ}/console/oidc/0/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let cookie = browser::set_cookie(&resp, "writ_oidc").expect("the pending sign-in's cookie");
    let params: Vec<(String, String)> = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("response_type"), "code");
    assert_eq!(get("client_id"), "writ-console");
    assert_eq!(get("redirect_uri"), format!("{writ}/console/oidc/callback"));
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("scope"), "openid email profile");
    let verifier_len = get("code_challenge").len();
    assert_eq!(verifier_len, 43, "a SHA-256 code challenge");
    assert!(get("nonce").len() >= 43);
    (cookie, get("state"), location)
}

async fn callback(
    http: &reqwest::Client,
    writ: &str,
    cookie: Option<&str>,
    query: &str,
) -> (u16, Option<String>, String) {
    let mut req = http.get(format!("{writ}/console/oidc/callback?{query}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let session = browser::set_cookie(&resp, "writ_session").filter(|c| c != "writ_session=");
    (status, session, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_with_a_real_openid_provider() {
    let Some(module) = provider_module() else {
        return;
    };
    let env = Env::new(None);
    env.run(&["users", "add", "alice"]);
    let writ_port = free_port();
    let idp_port = free_port();
    let writ = format!("http://127.0.0.1:{writ_port}");
    let idp = format!("http://127.0.0.1:{idp_port}");
    let _provider = start_provider(
        &module,
        env.dir(),
        idp_port,
        &format!("{writ}/console/oidc/callback"),
    );
    std::fs::write(
        env.path("writ.toml"),
        format!(
            r#"[server]
public_url = "{writ}"

[[identity.oidc]]
issuer = "{idp}"
audience = "writ-console"
jwks_url = "{idp}/jwks"

[identity.oidc.console]
client_id = "writ-console"
name = "Test IdP"
client_secret_env = "TEST_OIDC_CLIENT_SECRET"
"#
        ),
    )
    .unwrap();
    let server = env.serve_at(
        &format!("127.0.0.1:{writ_port}"),
        &["--config", "writ.toml"],
        &[("TEST_OIDC_CLIENT_SECRET", CLIENT_SECRET)],
    );

    // Without a browser: what must be refused.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // No pending sign-in in this browser.
    let (status, session, body) = callback(&http, &writ, None, "code=abc&state=xyz").await;
    assert_eq!(status, 400, "{body}");
    assert!(session.is_none());
    assert!(body.contains("unknown, expired or already used"), "{body}");
    // Another state than the one sent: refused, and the pending sign-in is used up.
    let (cookie, state, _) = start_flow(&http, &writ).await;
    let (status, session, body) =
        callback(&http, &writ, Some(&cookie), "code=abc&state=wrong").await;
    assert_eq!(status, 400, "{body}");
    assert!(session.is_none());
    assert!(body.contains("does not belong"), "{body}");
    let (status, session, _) = callback(
        &http,
        &writ,
        Some(&cookie),
        &format!("code=abc&state={state}"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(session.is_none());
    // No state at all.
    let (cookie, _, _) = start_flow(&http, &writ).await;
    let (status, session, _) = callback(&http, &writ, Some(&cookie), "code=abc").await;
    assert_eq!(status, 400);
    assert!(session.is_none());
    // The provider's error, shown by its code.
    let (cookie, state, _) = start_flow(&http, &writ).await;
    let (status, session, body) = callback(
        &http,
        &writ,
        Some(&cookie),
        &format!("error=access_denied&error_description=%3Cb%3Enope&state={state}"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(session.is_none());
    assert!(body.contains("(access_denied)"), "{body}");
    assert!(!body.contains("<b>nope"), "{body}");
    // A code the provider never issued: its token endpoint refuses it; a replay of the same
    // callback finds no pending sign-in any more.
    let (cookie, state, _) = start_flow(&http, &writ).await;
    let query = format!("code=made-up-code&state={state}&iss={idp}");
    let (status, session, body) = callback(&http, &writ, Some(&cookie), &query).await;
    assert_eq!(status, 502, "{body}");
    assert!(session.is_none());
    assert!(!body.contains("made-up-code"), "{body}");
    let (status, session, body) = callback(&http, &writ, Some(&cookie), &query).await;
    assert_eq!(status, 400, "{body}");
    assert!(session.is_none());
    assert!(body.contains("already used"), "{body}");

    // In a browser: the whole flow with the provider's own pages.
    let Some(driver) = chromedriver() else {
        return;
    };
    let profiles = tempfile::tempdir().unwrap();
    let c = browser(&driver, &profiles.path().join("alice")).await;
    sign_in_at_provider(&c, &writ, "alice").await;
    wait_for(&c, "#live-status").await;
    wait_for(&c, "span.user[data-signed-in=alice]").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/console/approvals")
    );
    // The session works like a key-based one: other pages, then sign-out.
    c.goto(&format!("{writ}/console/identity")).await.unwrap();
    wait_for(&c, "span.user[data-signed-in=alice]").await;
    wait_for(&c, "form[action='/console/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&c, "a.oidc-start").await;
    c.close().await.unwrap();

    // A user the provider knows and Writ does not: a clear page, no session.
    let c = browser(&driver, &profiles.path().join("mallory")).await;
    sign_in_at_provider(&c, &writ, "mallory").await;
    let text = text_of(&c, "section.error p.message").await;
    assert!(text.contains("mallory, who is not a Writ user"), "{text}");
    c.goto(&format!("{writ}/console/approvals")).await.unwrap();
    wait_for(&c, "a.oidc-start").await;
    c.close().await.unwrap();

    // The client secret from the vault instead of the environment: the same sign-in works.
    drop(server);
    std::fs::write(env.path("oidc-secret.txt"), CLIENT_SECRET).unwrap();
    env.run(&[
        "vault",
        "put",
        "oidc-console",
        "--from-file",
        "oidc-secret.txt",
    ]);
    std::fs::remove_file(env.path("oidc-secret.txt")).unwrap();
    let config = std::fs::read_to_string(env.path("writ.toml")).unwrap();
    std::fs::write(
        env.path("writ.toml"),
        config.replace(
            "client_secret_env = \"TEST_OIDC_CLIENT_SECRET\"",
            "client_secret_credential = \"oidc-console\"",
        ),
    )
    .unwrap();
    let _server = env.serve_at(
        &format!("127.0.0.1:{writ_port}"),
        &["--config", "writ.toml"],
        &[],
    );
    let c = browser(&driver, &profiles.path().join("alice-again")).await;
    sign_in_at_provider(&c, &writ, "alice").await;
    wait_for(&c, "span.user[data-signed-in=alice]").await;
    c.close().await.unwrap();
    drop(driver);
}
