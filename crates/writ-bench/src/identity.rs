//! `writ-bench identity`: what authenticating one request costs. Delegated-token verification
//! and the grant check, beside the bare Ed25519 signature verification they contain, on the same
//! token; plus, for scale, one durable budget spend on the embedded SQLite store.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use writ_core::Timestamp;
use writ_identity::token::check_grant;
use writ_identity::{ActionAttempt, AgentId, GrantSpec, Principal, TokenIssuer, Usage, UserId};

use crate::{Global, machine_description, percentile};

#[derive(Debug, Serialize)]
pub struct IdentityBenchReport {
    machine: String,
    samples: usize,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    what: &'static str,
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
}

fn measure(what: &'static str, samples: usize, mut f: impl FnMut() -> bool) -> anyhow::Result<Row> {
    // Warm caches and branch predictors first.
    for _ in 0..samples.min(1000) {
        anyhow::ensure!(f(), "{what} failed during warm-up");
    }
    let mut us = Vec::with_capacity(samples);
    let start = Instant::now();
    for _ in 0..samples {
        let t = Instant::now();
        let ok = f();
        us.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(ok, "{what} failed during the measurement");
    }
    let total = start.elapsed().as_secs_f64();
    us.sort_by(f64::total_cmp);
    Ok(Row {
        what,
        samples,
        p50_us: percentile(&us, 0.50),
        p99_us: percentile(&us, 0.99),
        per_second: samples as f64 / total,
    })
}

pub async fn run(samples: usize, durable_samples: usize, global: &Global) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let issuer = TokenIssuer::new(
        "https://writ.example",
        "writ",
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    );
    let verifier = issuer.verifier();
    let alice = UserId::new("alice")?;
    let spec: GrantSpec = serde_json::from_value(json!({
        "user": "alice",
        "agent": "bot",
        "actions": ["payments.send", "email.*"],
        "resources": ["acme/*"],
        "constraints": [
            {"pointer": "/amount", "rule": "at_most", "value": 500},
            {"pointer": "/to", "rule": "email_domain_in", "domains": ["example.com", "*.example.org"]},
            {"pointer": "/memo", "rule": "max_length", "max": 140},
            {"pointer": "/currency", "rule": "one_of", "values": ["EUR", "USD"]}
        ],
        "expires_at": Timestamp::from_micros(now.as_micros() + 3_600_000_000)?,
        "max_uses": 1_000_000_000u64,
        "sum_budget": {"pointer": "/amount", "max": 1_000_000_000}
    }))?;
    let grant = spec.authorize(
        &Principal::User {
            id: alice,
            admin: false,
        },
        now,
    )?;
    let (token, _) = issuer.mint(&grant, &grant.spec.actions, 0, now)?;
    let bot = AgentId::new("bot")?;
    let args =
        json!({"amount": 120.5, "to": "bob@example.com", "memo": "invoice 42", "currency": "EUR"});
    let attempt = ActionAttempt {
        agent: &bot,
        action: "payments.send",
        resource: Some("acme/billing"),
        arguments: &args,
    };
    let usage = Usage::default();

    let (input, sig) = token
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("minted token has no signature"))?;
    let sig = base64_url(sig)?;
    let sig = ed25519_dalek::Signature::from_slice(&sig)?;
    let key = issuer.verifying_key();

    let mut rows = vec![
        measure(
            "Ed25519 signature verification alone (verify_strict)",
            samples,
            || key.verify_strict(input.as_bytes(), &sig).is_ok(),
        )?,
        measure(
            "delegated token verification (parse, signature, claims)",
            samples,
            || verifier.verify(&token, &bot, now).is_ok(),
        )?,
        {
            let cache = writ_identity::CachingVerifier::new(verifier.clone(), 10_000);
            measure(
                "token verification, verified-token cache hit + grant liveness + grant check",
                samples,
                || {
                    cache.verify(&token, &bot, now).is_ok_and(|c| {
                        check_grant(&c, &grant, now).is_ok()
                            && grant.check(&attempt, now, usage).is_ok()
                    })
                },
            )?
        },
        measure("grant check (4 constraints, budgets)", samples, || {
            grant.check(&attempt, now, usage).is_ok()
        })?,
        measure(
            "token verification + grant liveness + grant check",
            samples,
            || {
                verifier.verify(&token, &bot, now).is_ok_and(|c| {
                    check_grant(&c, &grant, now).is_ok()
                        && grant.check(&attempt, now, usage).is_ok()
                })
            },
        )?,
    ];

    if durable_samples > 0 {
        rows.push(durable_use(&grant, &args, durable_samples).await?);
    }
    let report = IdentityBenchReport {
        machine: machine_description(),
        samples,
        rows,
    };
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("machine: {}", report.machine);
        println!("| what | samples | p50 µs | p99 µs | per second |");
        println!("|---|---:|---:|---:|---:|");
        for r in &report.rows {
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} |",
                r.what, r.samples, r.p50_us, r.p99_us, r.per_second
            );
        }
    }
    Ok(())
}

fn base64_url(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s)?)
}

/// One grant check plus its atomic budget spend on a fresh embedded SQLite store (each spend is
/// a durable commit).
async fn durable_use(
    grant: &writ_identity::Grant,
    args: &serde_json::Value,
    samples: usize,
) -> anyhow::Result<Row> {
    let dir = std::env::temp_dir().join(format!("writ-bench-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = durable_use_in(&dir, grant, args, samples).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn durable_use_in(
    dir: &std::path::Path,
    grant: &writ_identity::Grant,
    args: &serde_json::Value,
    samples: usize,
) -> anyhow::Result<Row> {
    use writ_store::IdentityStore;
    use writ_store::identity::{AgentRecord, UserRecord};
    let store = writ_store::sqlite::SqliteStore::open(&dir.join("bench.db")).await?;
    let now = Timestamp::now();
    store
        .add_user(&UserRecord {
            id: grant.spec.user.clone(),
            display_name: "bench".into(),
            admin: false,
            groups: vec![],
            created_at: now,
        })
        .await?;
    store
        .add_agent(&AgentRecord::new(
            grant.spec.agent.clone(),
            grant.spec.user.clone(),
            None,
            now,
        ))
        .await?;
    store.add_grant(grant).await?;
    let bot = grant.spec.agent.clone();
    let mut us = Vec::with_capacity(samples);
    let start = Instant::now();
    for _ in 0..samples {
        let attempt = ActionAttempt {
            agent: &bot,
            action: "payments.send",
            resource: Some("acme/billing"),
            arguments: args,
        };
        let t = Instant::now();
        let outcome =
            writ_gateway::auth::use_grant(&store, &grant.id, &attempt, Timestamp::now()).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(
            outcome.is_ok(),
            "the benchmark grant was refused: {outcome:?}"
        );
    }
    let total = start.elapsed().as_secs_f64();
    us.sort_by(f64::total_cmp);
    Ok(Row {
        what: "grant check + durable budget spend (SQLite, synchronous=FULL)",
        samples,
        p50_us: percentile(&us, 0.50),
        p99_us: percentile(&us, 0.99),
        per_second: samples as f64 / total,
    })
}
