//! The web console in a real browser: the real `writ serve` binary, headless Chromium driven over
//! WebDriver (chromedriver on loopback). Sign-in, an approval arriving live in the inbox and
//! approved there (then executed), the action's timeline with every inclusion proof and the
//! checkpoint signature verified by the browser, CSRF and origin checks, and users who may not
//! approve; sign-in with a password, its generic refusals and lock, and the end of a password
//! session when the password changes; the account page, where a user sets and changes their
//! password (staying signed in there) and signs out everywhere. With `WRIT_SCREENSHOTS=1` the
//! main pages are saved to `docs/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`). Without them the test prints why and passes, except under CI (env `CI`
//! set), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use browser::{PATIENCE, browser, chromedriver, text_of, wait_for};
use common::{Config, Env, Upstream};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

async fn sign_in(c: &Client, url: &str, key: &str) {
    c.goto(&format!("{url}/console")).await.unwrap();
    let field = wait_for(c, "#api_key").await;
    field.send_keys(key).await.unwrap();
    c.find(Locator::Css("#key-sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(c, "#live-status").await;
}

/// Fills the password form and sends it; the caller waits for what should follow.
async fn send_password(c: &Client, url: &str, user: &str, password: &str) {
    c.goto(&format!("{url}/console/login")).await.unwrap();
    wait_for(c, "#user").await.send_keys(user).await.unwrap();
    wait_for(c, "#password")
        .await
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("#password-sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    if std::env::var("WRIT_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = c.screenshot().await.unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("saved {}", path.display());
}

/// A pending action: `merge_pull_request` of `pull` into main, which needs a maintainer.
async fn merge_needing_approval(api: &common::Api, token: &str, pull: u64) -> (String, String) {
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            token,
            Some(json!({
                "connector": "github", "operation": "merge_pull_request",
                "args": {"pull_number": pull, "base": "main"},
                "intent": format!("ship the fix in pull request {pull}"),
                "rationale": "CI is green and the change was reviewed",
            })),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    (
        v["action_id"].as_str().unwrap().to_owned(),
        v["approval"]["id"].as_str().unwrap().to_owned(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A plain HTTP client that does not follow redirects, for what a browser would not send.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn session_cookie(c: &Client) -> String {
    let cookie = c
        .get_named_cookie("writ_session")
        .await
        .expect("the session cookie");
    format!("writ_session={}", cookie.value())
}

async fn csrf_of(c: &Client) -> String {
    c.find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap()
}

/// Posts a decision with a session cookie, as a forger or a script would.
async fn post_decision(
    url: &str,
    approval: &str,
    cookie: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> (u16, String) {
    let mut req = raw_client()
        .post(format!("{url}/console/approvals/{approval}/decision"))
        .header("cookie", cookie)
        .form(form);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn approval_state(api: &common::Api, admin: &str, approval: &str) -> Value {
    let (s, v) = api
        .call("GET", &format!("/v1/approvals/{approval}"), admin, None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let upstream = Upstream::start(None).await;
    // The example bundle serves; beside it, in shadow, a candidate in which no merge needs
    // approval, so that every merge is a recorded disagreement.
    let env = Env::new(None);
    env.init_with_secret(|policies| policies);
    let shadow = env.path("shadow");
    copy_dir(&env.path("policies"), &shadow);
    let github = shadow.join("github.cedar");
    let text = std::fs::read_to_string(&github).unwrap();
    let gate = "resource)\nunless { context.approval.granted };";
    assert!(text.contains(gate));
    std::fs::write(
        &github,
        text.replace(
            gate,
            "resource)\nwhen { context.args has base && context.args.base == \"never\" }\nunless { context.approval.granted };",
        ),
    )
    .unwrap();
    env.write_config(&Config {
        upstream: &upstream.url,
        policies: Some(&env.path("policies")),
        timeout_ms: 2000,
        merge_timeout_ms: None,
        credential: true,
        // Right after `[policy] dir`, so still in the [policy] table.
        extra: &format!(
            "shadow_dir = \"{}\"\n\n[audit]\ncheckpoint_interval_secs = 0\n\n[limits]\nactions_per_agent_per_minute = 0\n",
            shadow.display()
        ),
    });
    let mut server = env.serve();
    let admin = server.admin();
    let api = server.api();
    let url = server.url.clone();
    // alice (eng) owns agent `bot`; bob is a maintainer; dave is in no group.
    let d = api.delegation(&admin).await;
    let dave_key = api
        .add_user(&admin, json!({"id": "dave", "groups": []}))
        .await;

    // Every console response carries the security headers; the sign-in cookie is HttpOnly and
    // SameSite=Strict, and not Secure on loopback.
    let resp = raw_client()
        .get(format!("{url}/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let set_cookie = h["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    // Signed out, pages lead to the sign-in form.
    let resp = raw_client()
        .get(format!("{url}/console/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/console/login");

    let bob_profile = tempfile::tempdir().unwrap();
    let bob = browser(&driver, bob_profile.path()).await;

    // A wrong key is refused; bob's key signs him in.
    bob.goto(&format!("{url}/console")).await.unwrap();
    wait_for(&bob, "#api_key")
        .await
        .send_keys("writ_uk_not-a-real-key")
        .await
        .unwrap();
    bob.find(Locator::Css("#key-sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let problem = text_of(&bob, ".problem").await;
    assert!(problem.contains("not accepted"), "{problem}");
    sign_in(&bob, &url, &d.keys["bob"]).await;
    wait_for(&bob, "#live-status[data-live=open]").await;
    wait_for(&bob, "#no-approvals").await;
    let cookie = bob.get_named_cookie("writ_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));

    // An approval arrives while the inbox is open: it appears without a reload.
    let (action, approval) = merge_needing_approval(&api, &d.token, 7).await;
    let card_css = format!("article.approval[data-approval-id=\"{approval}\"]");
    let text = text_of(&bob, &card_css).await;
    for expected in [
        "github.merge_pull_request",
        "bot",
        "alice",
        &d.grants[0],
        "ship the fix in pull request 7",
        "github.*, until",
        "CI is green and the change was reviewed",
        "merge-needs-maintainer",
        "merging a pull request needs the approval of a maintainer",
        "group:maintainers",
        "0 of 1 approvals",
        "\"pull_number\": 7",
        "left",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    let source = bob.source().await.unwrap();
    assert!(
        !source.contains(&d.keys["bob"]),
        "the page shows the API key"
    );
    screenshot(&bob, "console-approvals.png").await;
    if std::env::var("WRIT_SCREENSHOTS").as_deref() == Ok("1") {
        bob.set_window_size(390, 1100).await.unwrap();
        screenshot(&bob, "console-phone.png").await;
        bob.set_window_size(1100, 1400).await.unwrap();
    }

    // bob approves with a comment: the same pipeline as the API, then Writ executes the merge.
    let card = wait_for(&bob, &card_css).await;
    card.find(Locator::Css("textarea[name=comment]"))
        .await
        .unwrap()
        .send_keys("LGTM from the console")
        .await
        .unwrap();
    card.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = wait_for(&bob, "#proof-summary[data-proof-summary=verified]").await;
    assert!(
        bob.current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&format!("/console/actions/{action}"))
    );
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/actions/{action}"),
            &d.keys["alice"],
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(upstream.count("merge/7"), 1);
    let decisions = v["approval"]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{v}");
    assert_eq!(decisions[0]["approver"], "bob");
    assert_eq!(decisions[0]["comment"], "LGTM from the console");

    // The timeline: every entry's inclusion proof and the checkpoint's signature verified by
    // the browser, one status per entry of the record.
    let entries = v["entries"].as_array().unwrap().len();
    let statuses = bob
        .find_all(Locator::Css("[data-proof-status]"))
        .await
        .unwrap();
    assert_eq!(statuses.len(), entries);
    for s in &statuses {
        assert_eq!(
            s.attr("data-proof-status").await.unwrap().as_deref(),
            Some("verified"),
            "{}",
            s.text().await.unwrap()
        );
    }
    let checkpoint = bob
        .find(Locator::Css("[data-checkpoint-status]"))
        .await
        .unwrap();
    assert_eq!(
        checkpoint
            .attr("data-checkpoint-status")
            .await
            .unwrap()
            .as_deref(),
        Some("verified")
    );
    assert!(
        summary
            .text()
            .await
            .unwrap()
            .contains(&format!("all {entries} entries"))
    );
    let page = bob
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "Intent and decision (agent)",
        "Evaluation (policy)",
        "Approval requested",
        "Approval decision",
        "Execution",
        "Response",
        "github-token@1",
        "LGTM from the console",
        v["bundle_version"].as_str().unwrap(),
    ] {
        assert!(page.contains(expected), "{expected:?} missing from {page}");
    }
    assert!(!page.contains(common::SECRET));
    screenshot(&bob, "console-action.png").await;

    // The browser's inclusion check agrees with writ-audit's on every leaf of every tree of up
    // to 33 leaves, and on the same proofs presented for the wrong leaf index.
    let mut tree = writ_audit::MemoryTree::new();
    let mut cases = Vec::new();
    let mut expected_results = Vec::new();
    for size in 1..=33u64 {
        tree.push(writ_audit::leaf_hash(&size.to_be_bytes()));
        let root = tree.root(size).unwrap();
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).unwrap();
            let leaf = tree.node(writ_audit::NodeId::new(0, index)).unwrap();
            for claimed in [index, (index + 1) % size] {
                expected_results.push(
                    writ_audit::verify_inclusion(&leaf, claimed, size, &proof, &root).is_ok(),
                );
                cases.push(json!({
                    "leaf": leaf.to_hex(), "index": claimed, "size": size, "root": root.to_hex(),
                    "proof": proof.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
                }));
            }
        }
    }
    let results = bob
        .execute(
            r#"const cases = arguments[0];
               return (async () => {
                 const out = [];
                 for (const c of cases) {
                   try {
                     await verifyInclusion(hexdecode(c.leaf), BigInt(c.index), BigInt(c.size),
                                           c.proof.map(hexdecode), hexdecode(c.root));
                     out.push(true);
                   } catch (_) {
                     out.push(false);
                   }
                 }
                 return out;
               })();"#,
            vec![json!(cases)],
        )
        .await
        .unwrap();
    assert_eq!(results, json!(expected_results));
    assert!(expected_results.iter().any(|ok| !ok));

    // The browser's verifier really checks: one changed byte in an entry, or in the signed
    // checkpoint, and it says FAILED with the reason.
    let tampered = bob
        .execute(
            r#"const e = document.querySelectorAll("li.entry")[1];
               e.dataset.canonicalB64 = btoa(atob(e.dataset.canonicalB64).replace('"kind":"evaluated"', '"kind":"evaluatex"'));
               return verifyRecord().then(() => [
                 e.querySelector("[data-proof-status]").getAttribute("data-proof-status"),
                 e.querySelector("[data-proof-status]").textContent,
                 document.querySelectorAll('[data-proof-status="verified"]').length,
                 document.getElementById("proof-summary").dataset.proofSummary]);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        tampered,
        json!([
            "failed",
            "FAILED: the proof does not lead to the checkpoint's root",
            entries - 1,
            "failed"
        ])
    );
    let tampered = bob
        .execute(
            r#"const cp = document.getElementById("checkpoint");
               const note = atob(cp.dataset.noteB64);
               cp.dataset.noteB64 = btoa(note.replace(/\n[0-9]+\n/, (m) => "\n" + (Number(m.trim()) + 1) + "\n"));
               return verifyRecord().then(() => [
                 cp.querySelector("[data-checkpoint-status]").textContent,
                 document.querySelectorAll('[data-proof-status="verified"]').length]);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        tampered,
        json!(["FAILED: the checkpoint's signature does not verify", 0]),
    );

    // A second request, for the forgery checks: refused without the CSRF token, with a wrong
    // one, and from another origin; the approval stays pending.
    let (action2, approval2) = merge_needing_approval(&api, &d.token, 8).await;
    bob.goto(&format!("{url}/console/approvals")).await.unwrap();
    wait_for(
        &bob,
        &format!("article.approval[data-approval-id=\"{approval2}\"] button.approve"),
    )
    .await;
    let rendered = bob
        .find(Locator::Css(&format!(
            "article.approval[data-approval-id=\"{approval2}\"]"
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(rendered.contains("github.*, until"), "{rendered}");
    let bob_cookie = session_cookie(&bob).await;
    let bob_csrf = csrf_of(&bob).await;
    for form in [
        vec![("decision", "approve")],
        vec![("decision", "approve"), ("csrf", "")],
        vec![("decision", "approve"), ("csrf", "forged-token-0123456789")],
    ] {
        let (s, body) = post_decision(&url, &approval2, &bob_cookie, &form, Some(&url)).await;
        assert_eq!(s, 403, "{form:?}: {body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    let (s, body) = post_decision(
        &url,
        &approval2,
        &bob_cookie,
        &[("decision", "approve"), ("csrf", &bob_csrf)],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("another site"), "{body}");
    assert_eq!(approval_state(&api, &admin, &approval2).await, "pending");

    // A third request arrives live and bob denies it with a comment: rejected, never executed.
    let (action3, approval3) = merge_needing_approval(&api, &d.token, 9).await;
    let card = wait_for(
        &bob,
        &format!("article.approval[data-approval-id=\"{approval3}\"] button.deny"),
    )
    .await;
    let card_form = bob
        .find(Locator::Css(&format!(
            "article.approval[data-approval-id=\"{approval3}\"] textarea[name=comment]"
        )))
        .await
        .unwrap();
    card_form.send_keys("not before the release").await.unwrap();
    card.click().await.unwrap();
    wait_for(&bob, ".state[data-state=rejected]").await;
    let (_, v) = api
        .call("GET", &format!("/v1/actions/{action3}"), &admin, None)
        .await;
    assert_eq!(v["status"], "rejected", "{v}");
    assert_eq!(v["approval"]["decisions"][0]["decision"], "deny", "{v}");
    assert_eq!(
        v["approval"]["decisions"][0]["comment"],
        "not before the release"
    );
    assert_eq!(upstream.count("merge/9"), 0);

    // Sign-out ends the session on the server: the old cookie no longer opens a page.
    bob.find(Locator::Css("header.top form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&bob, "#api_key").await;
    let resp = raw_client()
        .get(format!("{url}/console/approvals"))
        .header("cookie", &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);

    // dave is no approver: the request is not in his inbox, and a forged decision (with his
    // own valid session and token) is refused by the pipeline.
    sign_in(&bob, &url, &dave_key).await;
    wait_for(&bob, "#no-approvals").await;
    assert!(
        bob.find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty()
    );
    let dave_cookie = session_cookie(&bob).await;
    let dave_csrf = csrf_of(&bob).await;
    let (s, body) = post_decision(
        &url,
        &approval2,
        &dave_cookie,
        &[("decision", "approve"), ("csrf", &dave_csrf)],
        Some(&url),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not among this approval"), "{body}");
    assert_eq!(approval_state(&api, &admin, &approval2).await, "pending");
    // Nor may he revoke alice's grant.
    let resp = raw_client()
        .post(format!("{url}/console/grants/{}/revoke", d.grants[1]))
        .header("cookie", &dave_cookie)
        .form(&[("csrf", dave_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("only user alice"));
    bob.find(Locator::Css("header.top form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&bob, "#api_key").await;

    // alice sees her agent's request but may not decide it: no button, and a forged decision
    // is refused as self-approval.
    sign_in(&bob, &url, &d.keys["alice"]).await;
    let card = wait_for(
        &bob,
        &format!("article.approval[data-approval-id=\"{approval2}\"]"),
    )
    .await;
    assert!(
        card.find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        card.text()
            .await
            .unwrap()
            .contains("someone else must decide")
    );
    let alice_cookie = session_cookie(&bob).await;
    let alice_csrf = csrf_of(&bob).await;
    let (s, body) = post_decision(
        &url,
        &approval2,
        &alice_cookie,
        &[("decision", "approve"), ("csrf", &alice_csrf)],
        Some(&url),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("their own agent"), "{body}");
    assert_eq!(approval_state(&api, &admin, &approval2).await, "pending");
    assert_eq!(upstream.count("merge/8"), 0);

    // The audit explorer: alice sees her agent's actions, filtered, charted and exported.
    bob.goto(&format!("{url}/console/audit?agent=bot"))
        .await
        .unwrap();
    wait_for(&bob, &format!("tr[data-action-id=\"{action}\"]")).await;
    wait_for(&bob, &format!("tr[data-action-id=\"{action2}\"]")).await;
    assert!(
        !bob.find_all(Locator::Css("#verdict-chart rect"))
            .await
            .unwrap()
            .is_empty()
    );
    let log = text_of(&bob, "#log-size").await;
    assert!(log.ends_with(" entries"), "{log}");
    screenshot(&bob, "console-audit.png").await;
    bob.goto(&format!(
        "{url}/console/audit?verdict=approval&agent=&user="
    ))
    .await
    .unwrap();
    wait_for(&bob, &format!("tr[data-action-id=\"{action2}\"]")).await;
    let rows = bob
        .find_all(Locator::Css("#actions tbody tr"))
        .await
        .unwrap();
    for row in &rows {
        assert_eq!(
            row.attr("data-verdict").await.unwrap().as_deref(),
            Some("approval")
        );
    }
    let export = raw_client()
        .get(format!("{url}/console/audit/export.jsonl?agent=bot"))
        .header("cookie", &alice_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, record) = api
        .call("GET", &format!("/v1/actions/{action}"), &admin, None)
        .await;
    let (_, record2) = api
        .call("GET", &format!("/v1/actions/{action2}"), &admin, None)
        .await;
    let (_, record3) = api
        .call("GET", &format!("/v1/actions/{action3}"), &admin, None)
        .await;
    let expected = [record, record2, record3]
        .iter()
        .map(|r| r["entries"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(lines.len(), expected, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["seq"].is_u64() && l["action_id"].is_string())
    );
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );
    let ocsf = raw_client()
        .get(format!("{url}/console/audit/export.ocsf.jsonl?agent=bot"))
        .header("cookie", &alice_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), expected, "{ocsf}");
    assert!(events.iter().all(|e| e["class_uid"] == 6003));
    assert!(
        events
            .iter()
            .any(|e| e["metadata"]["correlation_uid"] == action.as_str())
    );
    // A session that was signed out exports nothing.
    let export = raw_client()
        .get(format!("{url}/console/audit/export.jsonl"))
        .header("cookie", &dave_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 401, "dave signed out earlier");

    // Agents and grants: alice grants her agent from the console, then revokes the grant.
    bob.goto(&format!("{url}/console/identity")).await.unwrap();
    wait_for(&bob, "tr[data-agent=bot]").await;
    for g in &d.grants {
        wait_for(
            &bob,
            &format!("article.grant[data-grant=\"{g}\"][data-state=live]"),
        )
        .await;
    }
    let form = wait_for(&bob, "form.new-grant").await;
    form.find(Locator::Css("input[name=actions]"))
        .await
        .unwrap()
        .send_keys("github.create_issue")
        .await
        .unwrap();
    form.find(Locator::Css("input[name=max_uses]"))
        .await
        .unwrap()
        .send_keys("3")
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form posts and the page comes back with the new grant.
    let deadline = Instant::now() + PATIENCE;
    while bob
        .find_all(Locator::Css("article.grant"))
        .await
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "the new grant did not appear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = api.call("GET", "/v1/grants", &d.keys["alice"], None).await;
    assert_eq!(s, 200, "{v}");
    let grants = v["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 3, "{v}");
    let new_grant = grants
        .iter()
        .find(|g| !d.grants.iter().any(|known| g["id"] == known.as_str()))
        .unwrap();
    assert_eq!(new_grant["actions"], json!(["github.create_issue"]));
    assert_eq!(new_grant["max_uses"], 3);
    let new_id = new_grant["id"].as_str().unwrap().to_owned();
    let card = wait_for(
        &bob,
        &format!("article.grant[data-grant=\"{new_id}\"][data-state=live]"),
    )
    .await;
    card.find(Locator::Css("form.revoke button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &bob,
        &format!("article.grant[data-grant=\"{new_id}\"][data-state=revoked]"),
    )
    .await;
    let (_, v) = api.call("GET", "/v1/grants", &d.keys["alice"], None).await;
    let revoked = v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == new_id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    // The policy view is for admins.
    bob.goto(&format!("{url}/console/policy")).await.unwrap();
    let error = wait_for(&bob, "section.error").await;
    assert_eq!(
        error.attr("data-status").await.unwrap().as_deref(),
        Some("403")
    );
    bob.find(Locator::Css("header.top form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&bob, "#api_key").await;
    sign_in(&bob, &url, &admin).await;
    // Log status: the whole log was verified at start; an admin verifies it again on demand.
    bob.goto(&format!("{url}/console/audit")).await.unwrap();
    wait_for(&bob, "#last-verification[data-state=verified]").await;
    bob.find(Locator::Css("#verify-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = text_of(&bob, "#last-verification[data-state=verified]").await;
        if text.contains("by user:admin") {
            assert!(text.contains("verified"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bob.goto(&format!("{url}/console/policy")).await.unwrap();
    let version = text_of(&bob, "#bundle-version").await;
    let (_, ready) = api.call("GET", "/readyz", "", None).await;
    assert_eq!(version, ready["policy"].as_str().unwrap());
    wait_for(&bob, "tr[data-policy=merge-needs-maintainer]").await;
    let shadowed = text_of(&bob, "#disagreements").await;
    for a in [&action, &action2, &action3] {
        assert!(shadowed.contains(a.as_str()), "{a} missing from {shadowed}");
    }
    assert!(shadowed.contains("require_approval"), "{shadowed}");

    // The admin's inbox shows the pending request (no buttons: not a maintainer); when bob
    // approves it through the API, the card closes live.
    bob.goto(&format!("{url}/console/approvals")).await.unwrap();
    wait_for(&bob, "#live-status[data-live=open]").await;
    wait_for(
        &bob,
        &format!("article.approval[data-approval-id=\"{approval2}\"]"),
    )
    .await;
    assert!(
        bob.find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty()
    );
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/approvals/{approval2}/decision"),
            &d.keys["bob"],
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    wait_for(
        &bob,
        &format!("article.approval.closed[data-approval-id=\"{approval2}\"]"),
    )
    .await;
    assert_eq!(upstream.count("merge/8"), 1);
    // An unknown console page is an HTML 404 with the console's headers.
    let resp = raw_client()
        .get(format!("{url}/console/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("content-security-policy"));

    // A live inbox does not hold the server up when it is asked to stop.
    let status = tokio::task::block_in_place(|| server.terminate(PATIENCE));
    assert!(
        status.is_some_and(|s| s.success()),
        "writ serve did not stop on SIGTERM with a live inbox open: {status:?}"
    );

    bob.close().await.unwrap();
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs in over plain HTTP with a user API key, as the sign-in form does; the session cookie.
async fn http_sign_in(url: &str, key: &str) -> String {
    let page = raw_client()
        .get(format!("{url}/console/login"))
        .send()
        .await
        .unwrap();
    let login = browser::set_cookie(&page, "writ_login").unwrap();
    let csrf = csrf_in(&page.text().await.unwrap());
    let resp = raw_client()
        .post(format!("{url}/console/login"))
        .header("cookie", login)
        .header("origin", url)
        .form(&[("csrf", csrf.as_str()), ("api_key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{:?}", resp.headers());
    browser::set_cookie(&resp, "writ_session").unwrap()
}

/// `GET /console/approvals` with a session cookie: 200 and the page, or 303 to the sign-in.
async fn inbox(url: &str, session: &str) -> (u16, String) {
    let resp = raw_client()
        .get(format!("{url}/console/approvals"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn sign_out(url: &str, session: &str, csrf: &str) {
    let resp = raw_client()
        .post(format!("{url}/console/logout"))
        .header("cookie", session)
        .header("origin", url)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

/// Sessions live in the database: a restart keeps them (SQLite), and two replicas on one
/// PostgreSQL share them, so signing out on one signs out on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_survive_restarts_and_are_shared_by_replicas() {
    let upstream = Upstream::start(None).await;
    let config = |env: &Env| {
        env.init_with_secret(|p| p);
        env.write_config(&Config {
            upstream: &upstream.url,
            policies: Some(&env.path("policies")),
            timeout_ms: 2000,
            merge_timeout_ms: None,
            credential: true,
            extra: "",
        });
    };

    // SQLite: signed in, restarted, still signed in; signed out, out for good.
    let env = Env::new(None);
    config(&env);
    let mut server = env.serve();
    let admin = server.admin();
    let session = http_sign_in(&server.url, &admin).await;
    let (status, page) = inbox(&server.url, &session).await;
    assert_eq!(status, 200, "{page}");
    server.terminate(Duration::from_secs(10)).unwrap();
    let server = env.serve();
    let (status, page) = inbox(&server.url, &session).await;
    assert_eq!(
        status, 200,
        "the session did not survive the restart: {page}"
    );
    // A session opened more than ten minutes ago cannot set a first password (a copied cookie
    // must not add a credential that outlives the session).
    let aged = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute('UPDATE console_sessions SET created_us = created_us - 700000000'); c.commit()",
        ])
        .arg(env.path("data/writ.db"))
        .status()
        .unwrap();
    assert!(aged.success());
    let resp = raw_client()
        .post(format!("{}/console/account/password", server.url))
        .header("cookie", &session)
        .header("origin", &server.url)
        .form(&[
            ("csrf", csrf_in(&page).as_str()),
            ("new_password", "a long enough passphrase"),
            ("repeat_password", "a long enough passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("within 10 minutes of signing in"), "{body}");
    sign_out(&server.url, &session, &csrf_in(&page)).await;
    assert_eq!(inbox(&server.url, &session).await.0, 303);
    // Nothing that opens a session is in the database: only its hash.
    let cookie_value = session.split_once('=').unwrap().1;
    for file in ["data/writ.db", "data/writ.db-wal"] {
        let bytes = std::fs::read(env.path(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(cookie_value.len())
                .any(|w| w == cookie_value.as_bytes()),
            "the session cookie is stored in clear in {file}"
        );
    }

    // With `identity.passwords = false`, password sign-in is gone: no form, a posted password
    // refused, no password to set over the API.
    drop(server);
    env.write_config(&Config {
        upstream: &upstream.url,
        policies: Some(&env.path("policies")),
        timeout_ms: 2000,
        merge_timeout_ms: None,
        credential: true,
        extra: "[identity]\npasswords = false\n\n",
    });
    let server = env.serve();
    let page = raw_client()
        .get(format!("{}/console/login", server.url))
        .send()
        .await
        .unwrap();
    let login = browser::set_cookie(&page, "writ_login").unwrap();
    let html = page.text().await.unwrap();
    assert!(!html.contains("password-sign-in"), "{html}");
    assert!(html.contains("key-sign-in"), "{html}");
    let resp = raw_client()
        .post(format!("{}/console/login", server.url))
        .header("cookie", login)
        .header("origin", &server.url)
        .form(&[
            ("csrf", csrf_in(&html).as_str()),
            ("user", "admin"),
            ("password", "a long enough passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("switched off"));
    let (status, body) = server
        .api()
        .call(
            "POST",
            "/v1/users/me/password",
            &admin,
            Some(json!({"password": "a long enough passphrase"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("identity.passwords"),
        "{body}"
    );
    drop(server);

    // PostgreSQL: two replicas on one database and one data directory.
    let Some(pg) = common::PgSchema::create("writ_console").await else {
        return;
    };
    let env = Env::new(Some(pg.url.clone()));
    config(&env);
    let a = env.serve();
    let admin = a.admin();
    let b = env.serve();
    let session = http_sign_in(&a.url, &admin).await;
    let (status, page) = inbox(&b.url, &session).await;
    assert_eq!(status, 200, "replica b does not know a's session: {page}");
    sign_out(&b.url, &session, &csrf_in(&page)).await;
    assert_eq!(
        inbox(&a.url, &session).await.0,
        303,
        "signed out on b, not on a"
    );
    drop((a, b));
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_sign_in_in_a_real_browser() {
    const FIRST: &str = "correct horse battery";
    const SECOND: &str = "staple sideways river moon";
    const GENERIC: &str = "That user id and password were not accepted.";
    let Some(driver) = chromedriver() else {
        return;
    };
    let upstream = Upstream::start(None).await;
    let env = Env::new(None);
    env.write_config(&Config::plain(&upstream.url));
    let server = env.serve();
    let admin = server.admin();
    let api = server.api();
    let url = server.url.clone();
    let carol_key = api.add_user(&admin, json!({"id": "carol"})).await;
    let (s, v) = api
        .call(
            "POST",
            "/v1/users/me/password",
            &carol_key,
            Some(json!({"password": FIRST})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // The password form comes first and signs carol in to her inbox.
    let phone_profile = tempfile::tempdir().unwrap();
    let phone = browser(&driver, phone_profile.path()).await;
    send_password(&phone, &url, "carol", FIRST).await;
    wait_for(&phone, "#live-status").await;
    wait_for(&phone, "span.user[data-signed-in=carol]").await;

    // Changing the password ends that session: the next page is the sign-in form.
    let (s, v) = api
        .call(
            "POST",
            "/v1/users/me/password",
            &carol_key,
            Some(json!({"password": SECOND, "current_password": FIRST})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    phone
        .goto(&format!("{url}/console/approvals"))
        .await
        .unwrap();
    wait_for(&phone, "#password-sign-in").await;
    assert!(
        phone
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login"),
        "still signed in after the password changed"
    );
    send_password(&phone, &url, "carol", SECOND).await;
    wait_for(&phone, "span.user[data-signed-in=carol]").await;

    // Elsewhere, a wrong password, an old one and an unknown user get the same words, and the
    // form does not echo what was typed.
    let other_profile = tempfile::tempdir().unwrap();
    let other = browser(&driver, other_profile.path()).await;
    for (user, password) in [
        ("carol", "not her password"),
        ("carol", FIRST),
        ("mallory", SECOND),
    ] {
        send_password(&other, &url, user, password).await;
        let problem = text_of(&other, ".problem").await;
        assert_eq!(problem, GENERIC, "{user}");
        assert!(!other.source().await.unwrap().contains(password));
    }
    // Enough failures lock the password (2^(n-5) s from the fifth): then the right one is
    // refused too, with the same words.
    for _ in 0..7 {
        send_password(&other, &url, "carol", "guessing again").await;
        assert_eq!(text_of(&other, ".problem").await, GENERIC);
    }
    send_password(&other, &url, "carol", SECOND).await;
    assert_eq!(text_of(&other, ".problem").await, GENERIC);
    assert!(other.get_named_cookie("writ_session").await.is_err());
    // Changing it needs the current password, and that is locked too: the API says so.
    let (s, v) = api
        .call(
            "POST",
            "/v1/users/me/password",
            &carol_key,
            Some(json!({"password": FIRST, "current_password": SECOND})),
        )
        .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"], "password_locked");
    // The refusals were counted as unauthenticated requests.
    let metrics = api.metrics().await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("writ_requests_refused_total{reason=\"unauthenticated\"} "))
        .unwrap_or_else(|| panic!("no unauthenticated count in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(refused >= 11.0, "{refused} refusals counted");

    // A lock does not end a session already open; an admin clearing the password does.
    phone
        .goto(&format!("{url}/console/approvals"))
        .await
        .unwrap();
    wait_for(&phone, "span.user[data-signed-in=carol]").await;
    let (s, v) = api
        .call("DELETE", "/v1/admin/users/carol/password", &admin, None)
        .await;
    assert_eq!((s, &v["cleared"]), (200, &json!(true)), "{v}");
    phone
        .goto(&format!("{url}/console/approvals"))
        .await
        .unwrap();
    wait_for(&phone, "#password-sign-in").await;
    // Her API key still signs her in.
    sign_in(&phone, &url, &carol_key).await;
    wait_for(&phone, "span.user[data-signed-in=carol]").await;

    phone.close().await.unwrap();
    other.close().await.unwrap();
}

/// Sends the account page's password form; `current` is typed only when the page asks for it.
async fn send_account_password(c: &Client, url: &str, current: &str, new: &str, repeat: &str) {
    c.goto(&format!("{url}/console/account")).await.unwrap();
    wait_for(c, "#password-form").await;
    if !current.is_empty() {
        wait_for(c, "#current_password")
            .await
            .send_keys(current)
            .await
            .unwrap();
    }
    wait_for(c, "#new_password")
        .await
        .send_keys(new)
        .await
        .unwrap();
    wait_for(c, "#repeat_password")
        .await
        .send_keys(repeat)
        .await
        .unwrap();
    c.find(Locator::Css("#password-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The account page's outcome after a form: its status and its words.
async fn account_outcome(c: &Client) -> (String, String) {
    let outcome = wait_for(c, "#account-outcome").await;
    let status = outcome.attr("data-status").await.unwrap().unwrap();
    (status, text_of(c, "#account-outcome").await)
}

/// Whether the next page load of `c` lands on the sign-in form.
async fn signed_out(c: &Client, url: &str) -> bool {
    c.goto(&format!("{url}/console/approvals")).await.unwrap();
    let page = wait_for(c, "#password-sign-in, span.user[data-signed-in]").await;
    page.attr("id").await.unwrap().as_deref() == Some("password-sign-in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_page_in_a_real_browser() {
    const FIRST: &str = "correct horse battery";
    const SECOND: &str = "staple sideways river moon";
    let Some(driver) = chromedriver() else {
        return;
    };
    let upstream = Upstream::start(None).await;
    let env = Env::new(None);
    env.write_config(&Config::plain(&upstream.url));
    let server = env.serve();
    let admin = server.admin();
    let api = server.api();
    let url = server.url.clone();
    let carol_key = api
        .add_user(
            &admin,
            json!({"id": "carol", "display_name": "Carol Example", "groups": ["maintainers"]}),
        )
        .await;
    let profiles: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    // A signs in with her key; the account page (linked from the header) says who she is and
    // how she signed in, and that she has no password yet, so it asks for no current one.
    let a = browser(&driver, profiles[0].path()).await;
    sign_in(&a, &url, &carol_key).await;
    a.find(Locator::Css("header.top nav a[href='/console/account']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&a, "#account-id").await, "carol");
    let account = text_of(&a, "#account").await;
    assert!(
        account.contains("Carol Example") && account.contains("maintainers"),
        "{account}"
    );
    assert_eq!(text_of(&a, "#account-admin").await, "no");
    assert_eq!(
        text_of(&a, "#signed-in-with").await,
        "signed in with your user API key"
    );
    assert!(!text_of(&a, "#session-ends").await.is_empty());
    let state = wait_for(&a, "#password-state").await;
    assert_eq!(
        state.attr("data-password").await.unwrap().as_deref(),
        Some("none")
    );
    assert!(a.find(Locator::Css("#current_password")).await.is_err());
    let source = a.source().await.unwrap();
    assert!(!source.contains(&carol_key), "the page shows the key");

    // She sets a first password there.
    send_account_password(&a, &url, "", FIRST, FIRST).await;
    let (status, message) = account_outcome(&a).await;
    assert_eq!(status, "200", "{message}");
    assert!(message.starts_with("Your password is set."), "{message}");
    let state = wait_for(&a, "#password-state").await;
    assert_eq!(
        state.attr("data-password").await.unwrap().as_deref(),
        Some("set")
    );
    wait_for(&a, "#current_password").await;
    assert!(!a.source().await.unwrap().contains(FIRST));

    // B and C sign in with it.
    let b = browser(&driver, profiles[1].path()).await;
    send_password(&b, &url, "carol", FIRST).await;
    wait_for(&b, "span.user[data-signed-in=carol]").await;
    let c = browser(&driver, profiles[2].path()).await;
    send_password(&c, &url, "carol", FIRST).await;
    wait_for(&c, "span.user[data-signed-in=carol]").await;

    // In B: a wrong current password and a repetition that differs are refused, in words.
    b.goto(&format!("{url}/console/account")).await.unwrap();
    assert_eq!(
        text_of(&b, "#signed-in-with").await,
        "signed in with your password"
    );
    send_account_password(&b, &url, "not her password", SECOND, SECOND).await;
    assert_eq!(
        account_outcome(&b).await,
        ("403".to_owned(), "the current password is wrong".to_owned())
    );
    send_account_password(&b, &url, FIRST, SECOND, "staple sideways river mon").await;
    let (status, message) = account_outcome(&b).await;
    assert_eq!(status, "400", "{message}");
    assert!(message.contains("differ"), "{message}");
    send_account_password(&b, &url, FIRST, "short", "short").await;
    let (status, message) = account_outcome(&b).await;
    assert_eq!(status, "400", "{message}");
    assert!(message.contains("too short"), "{message}");
    assert!(!b.source().await.unwrap().contains(SECOND));

    // The change: B stays signed in (a fresh session), A's key session goes on, and C, signed in
    // with the old password, is signed out.
    send_account_password(&b, &url, FIRST, SECOND, SECOND).await;
    let (status, message) = account_outcome(&b).await;
    assert_eq!(status, "200", "{message}");
    assert!(
        message.starts_with("Your password is changed."),
        "{message}"
    );
    assert!(
        !signed_out(&b, &url).await,
        "B was signed out by its own change"
    );
    wait_for(&b, "#live-status").await;
    assert!(!signed_out(&a, &url).await, "the key session ended");
    assert!(
        signed_out(&c, &url).await,
        "C's old password session goes on"
    );
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/login")
    );
    // The new password signs in; the old one does not.
    send_password(&c, &url, "carol", FIRST).await;
    assert_eq!(
        text_of(&c, ".problem").await,
        "That user id and password were not accepted."
    );

    // Sign out everywhere from B: B lands on the sign-in page, and A's session is over too.
    b.goto(&format!("{url}/console/account")).await.unwrap();
    wait_for(&b, "#sign-out-everywhere button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&b, "#password-sign-in").await;
    assert!(signed_out(&b, &url).await);
    assert!(
        signed_out(&a, &url).await,
        "A's session outlived sign-out everywhere"
    );

    // Both are in the audit log as carol's doing, and no password is anywhere in it.
    let admin_entries = env.run(&["audit", "query", "--kind", "admin", "--json"]);
    let events: Vec<Value> = admin_entries
        .lines()
        .flat_map(|l| match serde_json::from_str(l).unwrap() {
            Value::Array(items) => items,
            other => vec![other],
        })
        .filter(|e| e["actor"] == "user:carol")
        .map(|e| e["payload"].clone())
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"event": "user.password_set", "user": "carol"}),
            json!({"event": "user.password_set", "user": "carol"}),
            // A's key session and B's fresh one (B's first and C's ended with the change).
            json!({"event": "user.sessions_ended", "user": "carol", "count": 2}),
        ],
        "{admin_entries}"
    );
    let everything = env.run(&["audit", "export"]);
    for secret in [FIRST, SECOND, "argon2", carol_key.as_str()] {
        assert!(!everything.contains(secret), "the log holds {secret:?}");
    }

    for browser in [a, b, c] {
        browser.close().await.unwrap();
    }
}
