//! Console passwords end to end through the real `writ serve` binary on SQLite: a user sets
//! their own over the API (rules, current password, the wrong key), an admin clears it, `writ
//! users set-password` reads it from standard input as a client of the server and on the
//! server's host, the console's password form signs in and refuses with one generic answer, and
//! the audit log records every change without ever holding a password or its hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Config, Env, Upstream, writ_command};
use serde_json::{Value, json};

const FIRST: &str = "correct horse battery";
const SECOND: &str = "staple sideways river moon";
const THIRD: &str = "a third one, typed into a pipe";
const FOURTH: &str = "operator-chosen passphrase";
const FIFTH: &str = "changed with the current one";

/// Runs `cmd` with `input` on standard input; returns (success, stdout, stderr).
fn run_with_stdin(mut cmd: Command, input: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A plain HTTP client that keeps redirects to itself.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Posts the console's password form as a browser would (sign-in token bound to its cookie);
/// returns status, Location and body.
async fn console_sign_in(url: &str, user: &str, password: &str) -> (u16, String, String) {
    let http = raw_client();
    let page = http
        .get(format!("{url}/console/login"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let resp = http
        .post(format!("{url}/console/login"))
        .header("cookie", cookie)
        .header("origin", url)
        .form(&[
            ("csrf", token.as_str()),
            ("user", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap())
}

#[test]
fn passwords_through_the_api_the_cli_and_the_console_form() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Upstream::start(None));
    let env = Env::new(None);
    env.write_config(&Config::plain(&upstream.url));
    let server = env.serve();
    let api = server.api();
    let admin = server.admin();
    let call = |method: &str, path: &str, token: &str, body: Option<Value>| {
        rt.block_on(api.call(method, path, token, body))
    };
    let alice = rt.block_on(api.add_user(&admin, json!({"id": "alice"})));
    let bob = rt.block_on(api.add_user(&admin, json!({"id": "bob"})));
    let set = |token: &str, body: Value| call("POST", "/v1/users/me/password", token, Some(body));

    // The rules, each with a message that says what to do.
    let (s, v) = set(&alice, json!({"password": "short"}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("at least 12 characters"),
        "{v}"
    );
    let (s, v) = set(&alice, json!({"password": "x".repeat(257)}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("at most 256 bytes"),
        "{v}"
    );
    // Only a user's own key, and only a user's key.
    let (s, v) = set(&bob, json!({"user": "alice", "password": FIRST}));
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not alice's"),
        "{v}"
    );
    let (s, v) = set("", json!({"password": FIRST}));
    assert_eq!(s, 401, "{v}");

    // The first password needs no current one; then the current one is required and checked.
    let (s, v) = set(&alice, json!({"user": "alice", "password": FIRST}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"], "alice");
    assert!(v["password_set_at"].is_string(), "{v}");
    let (s, v) = set(&alice, json!({"password": SECOND}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("current_password"),
        "{v}"
    );
    let (s, v) = set(
        &alice,
        json!({"password": SECOND, "current_password": "not the current one"}),
    );
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("current password is wrong"),
        "{v}"
    );
    let (s, v) = set(
        &alice,
        json!({"password": SECOND, "current_password": FIRST}),
    );
    assert_eq!(s, 200, "{v}");

    // The console form: the right password opens a session; a wrong one, an unknown user and
    // an old password all get the same 401 and the same words.
    let url = server.url.clone();
    let (s, location, _) = rt.block_on(console_sign_in(&url, "alice", SECOND));
    assert_eq!((s, location.as_str()), (303, "/console/approvals"));
    let mut refusals = Vec::new();
    for (user, password) in [
        ("alice", FIRST),
        ("alice", "wrong wrong wrong"),
        ("mallory", SECOND),
    ] {
        let (s, _, body) = rt.block_on(console_sign_in(&url, user, password));
        assert_eq!(s, 401, "{user}: {body}");
        assert!(!body.contains(password), "the page repeats the password");
        let message = body
            .split("role=\"alert\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned();
        refusals.push(message);
    }
    assert!(refusals.iter().all(|m| m == &refusals[0]), "{refusals:?}");
    assert_eq!(refusals[0], "That user id and password were not accepted.");

    // An admin clears it (the forgotten-password path); a user may not clear anyone's.
    let (s, v) = call("DELETE", "/v1/admin/users/alice/password", &bob, None);
    assert_eq!(s, 403, "{v}");
    let (s, v) = call("DELETE", "/v1/admin/users/alice/password", &admin, None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"user": "alice", "cleared": true}));
    let (s, v) = call("DELETE", "/v1/admin/users/alice/password", &admin, None);
    assert_eq!((s, &v["cleared"]), (200, &json!(false)), "{v}");
    let (s, v) = call("DELETE", "/v1/admin/users/mallory/password", &admin, None);
    assert_eq!(s, 404, "{v}");
    let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", SECOND));
    assert_eq!(s, 401);

    // `writ users set-password` as a client of the server, the password on standard input.
    let client = |token: &str| {
        let mut c = writ_command();
        c.args(["users", "set-password", "alice"])
            .env("WRIT_URL", &url)
            .env("WRIT_TOKEN", token);
        c
    };
    let (ok, out, err) = run_with_stdin(client(&bob), &format!("{THIRD}\n"));
    assert!(!ok, "bob set alice's password: {out}");
    assert!(err.contains("not alice's"), "{err}");
    let (ok, out, err) = run_with_stdin(client(&alice), &format!("{THIRD}\n"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("password set for user alice"), "{out}");
    assert!(!out.contains(THIRD) && !err.contains(THIRD));
    let (ok, _, err) = run_with_stdin(client(&alice), "");
    assert!(!ok);
    assert!(err.contains("no new password on standard input"), "{err}");
    // Changing it again over the API needs the current one: --current reads it first.
    let (ok, _, err) = run_with_stdin(client(&alice), &format!("{SECOND}\n"));
    assert!(!ok);
    assert!(err.contains("run it again with --current"), "{err}");
    let mut with_current = client(&alice);
    with_current.arg("--current");
    let (ok, out, err) = run_with_stdin(with_current, &format!("wrong current one\n{SECOND}\n"));
    assert!(!ok, "{out}");
    assert!(err.contains("current password is wrong"), "{err}");
    let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", THIRD));
    assert_eq!(s, 303);
    let mut with_current = client(&alice);
    with_current.arg("--current");
    let (ok, out, err) = run_with_stdin(with_current, &format!("{THIRD}\n{FIFTH}\n"));
    assert!(ok, "{out}\n{err}");
    let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", FIFTH));
    assert_eq!(s, 303);

    // On the server's host an operator sets it without the current one.
    let mut local = env.writ();
    local.args(["users", "set-password", "alice"]);
    let (ok, out, err) = run_with_stdin(local, &format!("{FOURTH}\r\n"));
    assert!(ok, "{out}\n{err}");
    let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", FOURTH));
    assert_eq!(s, 303);
    let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", FIFTH));
    assert_eq!(s, 401);

    // Enough wrong attempts lock the password: the right one is then refused with the same
    // 401 and the same words, and changing it (which needs the current one) says it is locked.
    for _ in 0..9 {
        let (s, _, _) = rt.block_on(console_sign_in(&url, "alice", "a wrong guess"));
        assert_eq!(s, 401);
    }
    let (s, _, body) = rt.block_on(console_sign_in(&url, "alice", FOURTH));
    assert_eq!(s, 401, "the right password opened a locked account");
    assert!(body.contains(&refusals[0]), "{body}");
    let answer = rt.block_on(api.send(
        "POST",
        "/v1/users/me/password",
        Some(&alice),
        Some(json!({"password": FIRST, "current_password": FOURTH})),
    ));
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.body["error"], "password_locked");
    assert!(answer.headers.contains_key("retry-after"));

    // Every change is in the audit log, by whom, and no password or hash is anywhere in it.
    let admin_entries = env.run(&["audit", "query", "--kind", "admin", "--json"]);
    let events: Vec<(String, String)> = admin_entries
        .lines()
        .flat_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            match v {
                Value::Array(items) => items,
                other => vec![other],
            }
        })
        .filter_map(|e| {
            let event = e["payload"]["event"].as_str()?.to_owned();
            event
                .starts_with("user.password")
                .then(|| (event, e["actor"].as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("user.password_set", "user:alice"),
        ("user.password_set", "user:alice"),
        ("user.password_cleared", "user:admin"),
        ("user.password_cleared", "user:admin"),
        ("user.password_set", "user:alice"),
        ("user.password_set", "user:alice"),
        ("user.password_set", "operator"),
    ]
    .iter()
    .map(|(e, a)| (e.to_string(), a.to_string()))
    .collect();
    assert_eq!(events, expected, "{admin_entries}");
    let everything = env.run(&["audit", "export"]);
    for secret in [FIRST, SECOND, THIRD, FOURTH, FIFTH, "argon2"] {
        assert!(!everything.contains(secret), "the log holds {secret:?}");
    }
}
