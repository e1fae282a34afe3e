//! The gateway's authentication logic over a real store, on both backends: the token endpoint
//! (`auth::exchange`), the grant check with its atomic spend (`auth::grants`), and the console
//! password flows (`auth::passwords`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod backends;
mod exchange;
mod grants;
mod passwords;

use std::sync::Arc;

use backends::{Db, Kind};
use serde_json::json;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, GrantSpec, Principal, UserId};
use writ_store::identity::{AgentRecord, IdentityStore, UserRecord};

/// Another store instance on the test's database: another replica, with nothing cached.
pub async fn identity(db: &Db) -> Arc<dyn IdentityStore> {
    match &db.kind {
        Kind::Sqlite { path } => {
            Arc::new(writ_store::sqlite::SqliteStore::open(path).await.unwrap())
        }
        Kind::Postgres { url, .. } => {
            Arc::new(writ_store::postgres::PgStore::connect(url).await.unwrap())
        }
    }
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

pub fn user(id: &str, admin: bool, groups: &[&str]) -> UserRecord {
    UserRecord {
        id: UserId::new(id).unwrap(),
        display_name: format!("User {id}"),
        admin,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        created_at: Timestamp::from_micros(1_700_000_000_000_000).unwrap(),
    }
}

pub async fn alice_and_bot(s: &dyn IdentityStore) {
    s.add_user(&user("alice", false, &["eng", "payments"]))
        .await
        .unwrap();
    s.add_agent(&AgentRecord::new(
        AgentId::new("bot").unwrap(),
        UserId::new("alice").unwrap(),
        None,
        now(),
    ))
    .await
    .unwrap();
}

pub fn grant_spec(max_uses: Option<u64>, max_sum: Option<i64>) -> GrantSpec {
    let mut spec: GrantSpec = serde_json::from_value(json!({
        "user": "alice",
        "agent": "bot",
        "actions": ["payments.send"],
        "constraints": [{"pointer": "/amount", "rule": "at_most", "value": 500}],
        "expires_at": "2099-01-01T00:00:00Z",
    }))
    .unwrap();
    spec.max_uses = max_uses;
    spec.sum_budget = max_sum.map(|m| writ_identity::SumBudget {
        pointer: "/amount".into(),
        max: Amount(m * 1_000_000),
    });
    spec
}

pub fn alice() -> Principal {
    Principal::User {
        id: UserId::new("alice").unwrap(),
        admin: false,
    }
}

pub fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

pub fn sign(
    key: &ed25519_dalek::SigningKey,
    header: serde_json::Value,
    claims: serde_json::Value,
) -> String {
    use ed25519_dalek::Signer;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}
