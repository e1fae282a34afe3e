//! `writ users|agents|grants|vault|token`, end to end through the real executable, on SQLite and
//! (when `WRIT_TEST_POSTGRES_URL` is set) on a fresh PostgreSQL schema. One flow runs with a
//! known vault secret and debug logging, and asserts the secret appears in no output, no log
//! line and not in the database file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const SECRET: &str = "sk_live_KNOWN-SECRET-3f9a7c1e";

struct Env {
    data: PathBuf,
    url: Option<String>,
    all_output: std::cell::RefCell<String>,
}

impl Env {
    fn writ(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_writ"));
        cmd.arg("--data-dir")
            .arg(&self.data)
            .env_remove("WRIT_DATABASE_URL")
            .env_remove("WRIT_MASTER_KEY")
            .env("WRIT_LOG", "debug")
            .env("VAULT_SECRET", SECRET);
        if let Some(url) = &self.url {
            cmd.env("WRIT_DATABASE_URL", url);
        }
        cmd
    }

    fn run(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> (i32, String, String) {
        use std::io::Write;
        let mut cmd = self.writ();
        cmd.args(args).envs(envs.iter().copied());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        let (o, e) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        self.all_output
            .borrow_mut()
            .push_str(&format!("{o}\n{e}\n"));
        (out.status.code().unwrap_or(-1), o, e)
    }

    fn ok(&self, args: &[&str]) -> Value {
        self.ok_with(args, &[], None)
    }

    fn ok_with(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let (code, out, err) = self.run(&full, envs, stdin);
        assert_eq!(code, 0, "writ {args:?}\nstdout: {out}\nstderr: {err}");
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("writ {args:?} printed non-JSON ({e}): {out}"))
    }

    fn fails(&self, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> String {
        let (code, out, err) = self.run(args, envs, stdin);
        assert_ne!(
            code, 0,
            "writ {args:?} should fail\nstdout: {out}\nstderr: {err}"
        );
        format!("{out}{err}")
    }
}

fn flow(env: &Env) {
    let alice = env.ok(&["users", "add", "alice", "--group", "eng", "--api-key"]);
    let alice_key = alice["api_key"].as_str().unwrap().to_owned();
    assert!(alice_key.starts_with("writ_uk_"));
    env.ok(&["users", "add", "bob"]);
    env.ok(&["users", "add", "root", "--admin"]);
    let users = env.ok(&["users", "list"]);
    assert_eq!(users.as_array().unwrap().len(), 3);
    assert!(
        !users.to_string().contains(&alice_key),
        "listings never show a key"
    );

    let bot = env.ok(&["agents", "add", "bot", "--owner", "alice"]);
    let bot_key = bot["api_key"].as_str().unwrap().to_owned();
    assert!(bot_key.starts_with("writ_ak_"));
    env.ok(&["agents", "add", "other-bot", "--owner", "bob"]);
    assert!(
        env.fails(&["agents", "add", "x", "--owner", "nobody"], &[], None)
            .contains("does not exist")
    );

    let create = |who: &str| {
        vec![
            "grants",
            "create",
            "--as",
            who.to_owned().leak(),
            "--user",
            "alice",
            "--agent",
            "bot",
            "--action",
            "payments.send",
            "--resource",
            "acme/*",
            "--constraint",
            r#"{"pointer":"/amount","rule":"at_most","value":500}"#,
            "--expires-in",
            "1h",
            "--max-uses",
            "5",
            "--max-sum",
            "/amount=5000",
        ]
    };
    // An agent can never create a grant; another non-admin user cannot create one for alice.
    let refused = env.fails(&create("agent:bot"), &[], None);
    assert!(refused.contains("agent bot cannot create"), "{refused}");
    assert!(
        env.fails(&create("bob"), &[], None)
            .contains("cannot create a grant on behalf of user alice")
    );
    let grant = env.ok(&create("alice"));
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(grant["max_uses"], 5);
    assert_eq!(grant["sum_budget"]["max"], 5000);
    env.ok(&create("root"));
    // The same kind of grant from a YAML file.
    let yaml = env.data.with_extension("grant.yaml");
    std::fs::write(
        &yaml,
        "user: alice\nagent: bot\nactions: [github.*]\nresources: [acme/*]\nconstraints:\n  - {pointer: /base, rule: equals, value: main}\nexpires_at: 2099-01-01T00:00:00.000000Z\nmax_uses: 3\n",
    )
    .unwrap();
    let from_yaml = env.ok(&[
        "grants",
        "create",
        "--as",
        "alice",
        "--file",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(from_yaml["max_uses"], 3, "{from_yaml}");
    assert_eq!(from_yaml["actions"], serde_json::json!(["github.*"]));
    std::fs::write(
        &yaml,
        "user: alice\nagent: bot\nactions: [github.*]\nexpires_at: soon\n",
    )
    .unwrap();
    assert!(
        env.fails(
            &[
                "grants",
                "create",
                "--as",
                "alice",
                "--file",
                yaml.to_str().unwrap()
            ],
            &[],
            None
        )
        .contains("is not a valid grant spec")
    );
    let shown = env.ok(&["grants", "show", &grant_id]);
    assert_eq!(shown["usage"]["uses"], 0);
    // alice's and root's grants from flags, and the one from YAML.
    assert_eq!(
        env.ok(&["grants", "list", "--agent", "bot"])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Vault: put, rotate, list, retire; the secret never comes back out.
    let put = env.ok(&["vault", "put", "stripe", "--from-env", "VAULT_SECRET"]);
    assert_eq!(put["credential"], "stripe@1");
    assert!(
        env.fails(
            &["vault", "put", "stripe", "--from-env", "VAULT_SECRET"],
            &[],
            None
        )
        .contains("vault rotate")
    );
    let secret_file = env.data.join("..").join("secret.txt");
    std::fs::write(&secret_file, format!("{SECRET}-v2\n")).unwrap();
    let rotated = env.ok(&[
        "vault",
        "rotate",
        "stripe",
        "--from-file",
        secret_file.to_str().unwrap(),
    ]);
    assert_eq!(rotated["credential"], "stripe@2");
    env.ok(&[
        "vault",
        "put",
        "github",
        "--from-env",
        "VAULT_SECRET",
        "--for-user",
        "alice",
    ]);
    let list = env.ok(&["vault", "list"]);
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                format!(
                    "{}@{}",
                    v["reference"]["name"].as_str().unwrap(),
                    v["reference"]["version"]
                ),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("github@1".into(), "current".into()),
            ("stripe@1".into(), "previous".into()),
            ("stripe@2".into(), "current".into())
        ]
    );
    assert!(
        env.fails(&["vault", "retire", "stripe@2"], &[], None)
            .contains("rotate")
    );
    env.ok(&["vault", "retire", "stripe@1"]);
    assert!(
        env.fails(
            &["vault", "put", "Bad Name", "--from-env", "VAULT_SECRET"],
            &[],
            None
        )
        .contains("invalid credential name")
    );

    // Token exchange: user key + agent key → delegated token for the grant.
    let creds = [
        ("WRIT_SUBJECT_TOKEN", alice_key.as_str()),
        ("WRIT_ACTOR_TOKEN", bot_key.as_str()),
    ];
    let resp = env.ok_with(&["token", "exchange", "--grant", &grant_id], &creds, None);
    let token = resp["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        resp["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let verified = env.ok_with(&["token", "verify", "--agent", "bot"], &[], Some(&token));
    assert_eq!(verified["claims"]["sub"], "alice");
    assert_eq!(verified["claims"]["act"]["sub"], "bot");
    // Agent B presenting agent A's token.
    assert!(
        env.fails(
            &["token", "verify", "--agent", "other-bot"],
            &[],
            Some(&token)
        )
        .contains("agent other-bot presented it")
    );
    // The wrong user's key, and the agent's key as the subject.
    let (code, out, _) = env.run(
        &["--json", "token", "exchange", "--grant", &grant_id],
        &[
            ("WRIT_SUBJECT_TOKEN", bot_key.as_str()),
            ("WRIT_ACTOR_TOKEN", bot_key.as_str()),
        ],
        None,
    );
    assert_ne!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["error"],
        "invalid_grant"
    );
    let tampered = format!("{}x", &alice_key[..alice_key.len() - 1]);
    let (code, out, _) = env.run(
        &["--json", "token", "exchange", "--grant", &grant_id],
        &[
            ("WRIT_SUBJECT_TOKEN", tampered.as_str()),
            ("WRIT_ACTOR_TOKEN", bot_key.as_str()),
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        !out.contains(&tampered[10..]),
        "the error repeats the presented key: {out}"
    );

    // A disabled agent gets no token; enabled again, it does.
    let disabled = env.ok(&["agents", "disable", "bot"]);
    assert_eq!(disabled["enabled"], false);
    assert!(
        env.fails(&["token", "exchange", "--grant", &grant_id], &creds, None)
            .contains("agent bot is disabled")
    );
    env.ok(&["agents", "enable", "bot"]);
    env.ok_with(&["token", "exchange", "--grant", &grant_id], &creds, None);

    // The JWKS verifies the token in PyJWT, independently of Writ.
    let jwks = env.ok(&["token", "jwks"]);
    pyjwt_check(&env.data, &token, &jwks);

    // The same exchange with an OIDC ID token as the subject.
    oidc_exchange(env, &grant_id, &bot_key);

    // Revocation takes effect at once: the same token no longer verifies.
    assert!(
        env.fails(&["grants", "revoke", &grant_id, "--as", "bob"], &[], None)
            .contains("cannot revoke")
    );
    env.ok(&["grants", "revoke", &grant_id, "--as", "alice"]);
    let after = env.fails(&["token", "verify", "--agent", "bot"], &[], Some(&token));
    assert!(after.contains("revoked"), "{after}");
    assert!(
        env.fails(&["token", "exchange", "--grant", &grant_id], &creds, None)
            .contains("revoked")
    );

    // Rotating the agent's key revokes the old one.
    let rotated = env.ok(&["agents", "rotate-key", "bot"]);
    assert_ne!(rotated["api_key"].as_str().unwrap(), bot_key);
    assert!(
        env.fails(&["token", "exchange", "--grant", &grant_id], &creds, None)
            .contains("unknown or revoked")
    );

    // Every change is in the audit log, credentials only as name@version.
    let entries = env.ok(&["audit", "query"]);
    let text = entries.to_string();
    for event in [
        "user.created",
        "agent.created",
        "grant.created",
        "grant.revoked",
        "credential.stored",
        "credential.rotated",
        "credential.retired",
        "token.issued",
        "agent.key_rotated",
        "agent.disabled",
        "agent.enabled",
    ] {
        assert!(text.contains(event), "no {event} entry in the audit log");
    }
    assert!(text.contains("stripe@2"));
    assert!(!text.contains(&token), "the audit log holds a token");
    assert!(
        !text.contains(&alice_key) && !text.contains(&bot_key),
        "the audit log holds an API key"
    );

    // The known secret appears in no output, log line or audit entry of the whole flow.
    let everything = env.all_output.borrow();
    assert!(!everything.is_empty());
    assert!(
        !everything.contains(SECRET),
        "the vault secret leaked into CLI output or logs"
    );
}

fn pyjwt_check(data: &Path, token: &str, jwks: &Value) {
    let available = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the Python `pyjwt` and `cryptography` packages"
        );
        eprintln!("skipping the PyJWT check: python3 with pyjwt is not available");
        return;
    }
    std::fs::write(data.join("token.txt"), token).unwrap();
    std::fs::write(data.join("jwks.json"), jwks.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../writ-identity/tests/verify_jwt.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(data.join("token.txt"))
        .arg(data.join("jwks.json"))
        .args(["http://127.0.0.1:8080", "writ"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn identity_flow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        data: dir.path().join("data"),
        url: None,
        all_output: Default::default(),
    };
    flow(&env);
    // Nor is it in the database file in clear.
    let mut bytes = std::fs::read(env.data.join("writ.db")).unwrap();
    bytes.extend(std::fs::read(env.data.join("writ.db-wal")).unwrap_or_default());
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret is in the database in clear"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["master.key", "token.key"] {
            let mode = std::fs::metadata(env.data.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}

#[test]
fn identity_flow_on_postgres() {
    let base = match std::env::var("WRIT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI is set but WRIT_TEST_POSTGRES_URL is not"
            );
            eprintln!("skipping the PostgreSQL variant: WRIT_TEST_POSTGRES_URL is not set");
            return;
        }
    };
    let schema = format!(
        "writ_cli_identity_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt
        .block_on(writ_store::postgres::url_with_fresh_schema(&base, &schema))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        data: dir.path().join("data"),
        url: Some(url),
        all_output: Default::default(),
    };
    std::fs::create_dir_all(&env.data).unwrap();
    flow(&env);
    rt.block_on(writ_store::postgres::drop_schema(&base, &schema))
        .unwrap();
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn sign_jwt(key: &ed25519_dalek::SigningKey, header: Value, claims: Value) -> String {
    use ed25519_dalek::Signer;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}

/// Serves `jwks` at `/jwks` on a loopback port from a real HTTP server (axum) on a thread of
/// its own; returns the port.
fn serve_jwks(jwks: Value) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// `writ token exchange --config` with an ID token from a configured issuer whose JWKS is
/// served on loopback; and the attacks: unconfigured issuer, wrong audience, expired, signed by
/// a key the JWKS does not hold, and a user who does not exist locally.
fn oidc_exchange(env: &Env, grant_id: &str, bot_key: &str) {
    use serde_json::json;
    let idp = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let port = serve_jwks(
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "idp1",
        "x": b64(idp.verifying_key().as_bytes())}]}),
    );
    let config = env.data.join("writ-oidc.toml");
    std::fs::write(
        &config,
        format!(
            "[[identity.oidc]]\nissuer = \"https://idp.example\"\naudience = \"writ\"\njwks_url = \"http://127.0.0.1:{port}/jwks\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token =
        |key: &ed25519_dalek::SigningKey, kid: &str, iss: &str, aud: &str, sub: &str, exp: i64| {
            sign_jwt(
                key,
                json!({"alg": "EdDSA", "kid": kid}),
                json!({"iss": iss, "aud": aud, "sub": sub, "exp": exp, "iat": t - 10}),
            )
        };
    let args = [
        "--json", "token", "exchange", "--grant", grant_id, "--config", config,
    ];
    let exchange = |id_token: &str| {
        env.run(
            &args,
            &[
                ("WRIT_SUBJECT_TOKEN", id_token),
                ("WRIT_ACTOR_TOKEN", bot_key),
            ],
            None,
        )
    };

    let good = token(
        &idp,
        "idp1",
        "https://idp.example",
        "writ",
        "alice",
        t + 300,
    );
    let (code, out, err) = exchange(&good);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let resp: Value = serde_json::from_str(out.trim()).unwrap();
    let minted = resp["access_token"].as_str().unwrap();
    let verified = env.ok_with(&["token", "verify", "--agent", "bot"], &[], Some(minted));
    assert_eq!(verified["claims"]["sub"], "alice");

    let intruder = ed25519_dalek::SigningKey::from_bytes(&[22; 32]);
    let attacks = [
        (
            "unconfigured issuer",
            token(
                &idp,
                "idp1",
                "https://evil.example",
                "writ",
                "alice",
                t + 300,
            ),
            "not trusted",
        ),
        (
            "wrong audience",
            token(
                &idp,
                "idp1",
                "https://idp.example",
                "other-app",
                "alice",
                t + 300,
            ),
            "",
        ),
        (
            "expired",
            token(
                &idp,
                "idp1",
                "https://idp.example",
                "writ",
                "alice",
                t - 600,
            ),
            "",
        ),
        (
            "foreign key, known kid",
            token(
                &intruder,
                "idp1",
                "https://idp.example",
                "writ",
                "alice",
                t + 300,
            ),
            "",
        ),
        (
            "foreign key, unknown kid",
            token(
                &intruder,
                "evil",
                "https://idp.example",
                "writ",
                "alice",
                t + 300,
            ),
            "",
        ),
        (
            "user not local",
            token(
                &idp,
                "idp1",
                "https://idp.example",
                "writ",
                "mallory",
                t + 300,
            ),
            "not a Writ user",
        ),
    ];
    for (what, bad, says) in attacks {
        let (code, out, err) = exchange(&bad);
        assert_ne!(code, 0, "{what} was accepted: {out}");
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{what}: non-JSON ({e}): {out} {err}"));
        assert_eq!(v["error"], "invalid_grant", "{what}: {v}");
        assert!(
            v["error_description"].as_str().unwrap().contains(says),
            "{what}: {v}"
        );
        assert!(
            !out.contains(&bad) && !err.contains(&bad),
            "{what}: the token is repeated"
        );
    }
    // Without --config no issuer is trusted: the same good token fails closed.
    let (code, out, _) = env.run(
        &["--json", "token", "exchange", "--grant", grant_id],
        &[
            ("WRIT_SUBJECT_TOKEN", good.as_str()),
            ("WRIT_ACTOR_TOKEN", bot_key),
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(out.contains("not trusted"), "{out}");
}
