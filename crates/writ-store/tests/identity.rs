//! Identity and vault persistence on both backends: users, agents, API-key hashes, grants with
//! atomic budgets and immediate revocation, versioned sealed credentials, and console sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Db, Kind};
use serde_json::json;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, GrantSpec, Principal, UserId};
use writ_store::StoreError;
use writ_store::identity::{
    AgentRecord, ApiKeyRecord, GrantFilter, IdentityStore, KeySubject, UserRecord,
};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, MasterKey, Secret, VersionState};

async fn identity(db: &Db) -> Arc<dyn IdentityStore> {
    match &db.kind {
        Kind::Sqlite { path } => {
            Arc::new(writ_store::sqlite::SqliteStore::open(path).await.unwrap())
        }
        Kind::Postgres { url, .. } => {
            Arc::new(writ_store::postgres::PgStore::connect(url).await.unwrap())
        }
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn user(id: &str, admin: bool, groups: &[&str]) -> UserRecord {
    UserRecord {
        id: UserId::new(id).unwrap(),
        display_name: format!("User {id}"),
        admin,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        created_at: Timestamp::from_micros(1_700_000_000_000_000).unwrap(),
    }
}

async fn alice_and_bot(s: &dyn IdentityStore) {
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

fn grant_spec(max_uses: Option<u64>, max_sum: Option<i64>) -> GrantSpec {
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

fn alice() -> Principal {
    Principal::User {
        id: UserId::new("alice").unwrap(),
        admin: false,
    }
}

async fn users_agents_and_keys(db: Db) {
    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let err = s.add_user(&user("alice", true, &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    let got = s
        .user(&UserId::new("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, user("alice", false, &["eng", "payments"]));
    assert!(
        s.user(&UserId::new("nobody").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    s.add_user(&user("root", true, &[])).await.unwrap();
    let ids: Vec<_> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id.to_string())
        .collect();
    assert_eq!(ids, ["alice", "root"]);

    let orphan = AgentRecord::new(
        AgentId::new("orphan").unwrap(),
        UserId::new("nobody").unwrap(),
        None,
        now(),
    );
    assert!(matches!(
        s.add_agent(&orphan).await,
        Err(StoreError::NotFound(_))
    ));
    let bot = AgentId::new("bot").unwrap();
    s.set_agent_public_key(&bot, Some(r#"{"kty":"OKP"}"#))
        .await
        .unwrap();
    assert_eq!(
        s.agent(&bot).await.unwrap().unwrap().public_key.as_deref(),
        Some(r#"{"kty":"OKP"}"#)
    );
    assert_eq!(s.agents().await.unwrap().len(), 1);
    assert!(matches!(
        s.set_agent_public_key(&AgentId::new("ghost").unwrap(), None)
            .await,
        Err(StoreError::NotFound(_))
    ));

    let hash = [7u8; 32];
    let record = ApiKeyRecord {
        key_id: "writ_ak_abc".into(),
        subject: KeySubject::Agent(bot.clone()),
        created_at: Timestamp::from_micros(1_700_000_000_000_000).unwrap(),
        revoked_at: None,
    };
    s.add_api_key(&hash, &record).await.unwrap();
    assert_eq!(s.api_key(&hash).await.unwrap(), Some(record));
    assert_eq!(s.api_key(&[8u8; 32]).await.unwrap(), None);
    assert_eq!(
        s.revoke_api_keys(&KeySubject::Agent(bot), now())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.api_key(&hash).await.unwrap(),
        None,
        "a revoked key no longer authenticates"
    );
    db.cleanup().await;
}
on_both_backends!(users_agents_and_keys);

/// Users and agents share one namespace; an agent can be disabled and enabled; revoking an
/// agent's keys or replacing its public key moves its key generation on.
async fn names_disabling_and_key_generations(db: Db) {
    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let bot = AgentId::new("bot").unwrap();
    // An agent named like a user, and a user named like an agent, are refused.
    let err = s
        .add_agent(&AgentRecord::new(
            AgentId::new("alice").unwrap(),
            UserId::new("alice").unwrap(),
            None,
            now(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NameTaken { holder: "user", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already taken by a user"), "{err}");
    let err = s.add_user(&user("bot", false, &[])).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NameTaken {
                holder: "agent",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("already taken by an agent"),
        "{err}"
    );
    // The refused principal left nothing behind.
    assert!(
        s.user(&UserId::new("bot").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.agent(&AgentId::new("alice").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // The same kind twice is still "already exists".
    let err = s
        .add_agent(&AgentRecord::new(
            bot.clone(),
            UserId::new("alice").unwrap(),
            None,
            now(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");

    let record = s.agent(&bot).await.unwrap().unwrap();
    assert_eq!((record.disabled_at, record.key_generation), (None, 0));
    let at = Timestamp::from_micros(1_700_000_000_000_000).unwrap();
    s.set_agent_disabled(&bot, Some(at)).await.unwrap();
    assert_eq!(s.agent(&bot).await.unwrap().unwrap().disabled_at, Some(at));
    s.set_agent_disabled(&bot, None).await.unwrap();
    assert_eq!(s.agent(&bot).await.unwrap().unwrap().disabled_at, None);
    assert!(matches!(
        s.set_agent_disabled(&AgentId::new("ghost").unwrap(), Some(at))
            .await,
        Err(StoreError::NotFound(_))
    ));

    let generation = |s: Arc<dyn IdentityStore>| {
        let bot = bot.clone();
        async move { s.agent(&bot).await.unwrap().unwrap().key_generation }
    };
    s.revoke_api_keys(&KeySubject::Agent(bot.clone()), now())
        .await
        .unwrap();
    assert_eq!(generation(s.clone()).await, 1);
    s.set_agent_public_key(&bot, Some(r#"{"kty":"OKP"}"#))
        .await
        .unwrap();
    assert_eq!(generation(s.clone()).await, 2);
    // A user's keys leave every agent's generation alone.
    s.revoke_api_keys(&KeySubject::User(UserId::new("alice").unwrap()), now())
        .await
        .unwrap();
    assert_eq!(generation(s.clone()).await, 2);
}

on_both_backends!(names_disabling_and_key_generations);

async fn grants_round_trip_and_revocation_is_immediate(db: Db) {
    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let grant = grant_spec(Some(5), None)
        .authorize(&alice(), now())
        .unwrap();
    s.add_grant(&grant).await.unwrap();
    let stored = s.grant(&grant.id).await.unwrap().unwrap();
    assert_eq!(stored.grant, grant);
    assert_eq!(stored.usage.uses, 0);
    let by_agent = GrantFilter {
        agent: Some(AgentId::new("bot").unwrap()),
        ..Default::default()
    };
    assert_eq!(s.grants(&by_agent).await.unwrap().len(), 1);
    let other = GrantFilter {
        user: Some(UserId::new("root").unwrap()),
        ..Default::default()
    };
    assert!(s.grants(&other).await.unwrap().is_empty());

    // A second store instance (another replica) sees the revocation on its very next check.
    let replica = identity(&db).await;
    assert!(s.revoke_grant(&grant.id, now()).await.unwrap());
    assert!(
        !s.revoke_grant(&grant.id, now()).await.unwrap(),
        "second revoke is a no-op"
    );
    // The atomic consume refuses a revoked grant.
    assert_eq!(
        replica
            .consume_grant(&grant.id, Amount::ZERO, now())
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        s.revoke_grant(&writ_identity::GrantId::new("grt_missing").unwrap(), now())
            .await,
        Err(StoreError::NotFound(_))
    ));
    db.cleanup().await;
}
on_both_backends!(grants_round_trip_and_revocation_is_immediate);

fn cref(name: &str, version: u32, scope: CredentialScope) -> CredentialRef {
    CredentialRef {
        name: CredentialName::new(name).unwrap(),
        version,
        scope,
    }
}

async fn put(
    s: &dyn IdentityStore,
    master: &MasterKey,
    name: &str,
    scope: CredentialScope,
    secret: &str,
) -> u32 {
    let n = CredentialName::new(name).unwrap();
    let version = s.next_credential_version(&n, &scope).await.unwrap();
    let sealed = writ_vault::seal(
        master,
        cref(name, version, scope),
        &Secret::from(secret.to_owned()),
    )
    .unwrap();
    s.put_credential(&sealed, now()).await.unwrap();
    version
}

async fn open(s: &dyn IdentityStore, master: &MasterKey, r: &CredentialRef) -> Option<String> {
    let sealed = s.sealed_credential(r).await.unwrap()?;
    Some(String::from_utf8(writ_vault::open(master, &sealed).unwrap().expose().to_vec()).unwrap())
}

async fn vault_versions_rotation_and_retirement(db: Db) {
    let s = identity(&db).await;
    let master = MasterKey::generate().unwrap();
    const SECRET_1: &str = "ghp_FIRST_secret_value_0001";
    const SECRET_2: &str = "ghp_SECOND_secret_value_0002";
    assert_eq!(
        put(
            s.as_ref(),
            &master,
            "github",
            CredentialScope::Shared,
            SECRET_1
        )
        .await,
        1
    );
    assert_eq!(
        put(
            s.as_ref(),
            &master,
            "github",
            CredentialScope::Shared,
            SECRET_2
        )
        .await,
        2
    );
    let alice = CredentialScope::user("alice").unwrap();
    assert_eq!(
        put(
            s.as_ref(),
            &master,
            "github",
            alice.clone(),
            "alice-own-token"
        )
        .await,
        1
    );

    let versions = s.credential_versions(None).await.unwrap();
    let states: Vec<_> = versions
        .iter()
        .map(|v| (v.reference.to_string(), v.state))
        .collect();
    assert_eq!(
        states,
        [
            ("github@1".to_owned(), VersionState::Previous),
            ("github@2".to_owned(), VersionState::Current),
            (
                "github@1 (for user alice)".to_owned(),
                VersionState::Current
            ),
        ]
    );
    // Rotation keeps the previous version readable until it is retired.
    let v1 = cref("github", 1, CredentialScope::Shared);
    let v2 = cref("github", 2, CredentialScope::Shared);
    assert_eq!(
        open(s.as_ref(), &master, &v1).await.as_deref(),
        Some(SECRET_1)
    );
    assert_eq!(
        open(s.as_ref(), &master, &v2).await.as_deref(),
        Some(SECRET_2)
    );
    assert_eq!(
        open(s.as_ref(), &master, &cref("github", 1, alice.clone()))
            .await
            .as_deref(),
        Some("alice-own-token")
    );

    let err = s
        .retire_credential(&v2, now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotate"), "{err}");
    s.retire_credential(&v1, now()).await.unwrap();
    assert!(
        s.sealed_credential(&v1).await.unwrap().is_none(),
        "a retired version cannot be read"
    );
    assert!(s.retire_credential(&v1, now()).await.is_err());
    let v = s
        .credential_versions(Some(&CredentialName::new("github").unwrap()))
        .await
        .unwrap();
    assert_eq!(v[0].state, VersionState::Retired);
    assert!(v[0].retired_at.is_some());

    // A ciphertext sealed for the wrong version is refused by the store.
    let stale = writ_vault::seal(&master, v2.clone(), &Secret::from("x".to_owned())).unwrap();
    assert!(matches!(
        s.put_credential(&stale, now()).await,
        Err(StoreError::Conflict(_))
    ));

    // The secrets are nowhere in the database in clear.
    if let Kind::Sqlite { path } = &db.kind {
        drop(s);
        let mut bytes = std::fs::read(path).unwrap();
        let wal = path.with_extension("db-wal");
        if let Ok(w) = std::fs::read(wal) {
            bytes.extend(w);
        }
        for secret in [SECRET_1, SECRET_2, "alice-own-token"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in the database"
            );
        }
    }
    db.cleanup().await;
}
on_both_backends!(vault_versions_rotation_and_retirement);

/// RFC 7523 replay protection, the store's side: an `(agent, jti)` row blocks until it expires,
/// also across two store instances on one database; an expired row does not block forever.
async fn assertion_jtis_expire(db: Db) {
    let s = identity(&db).await;
    let other = identity(&db).await;
    let bot = AgentId::new("bot").unwrap();
    // The store level: a row blocks until it expires, then is pruned and the jti is free.
    let t0 = now();
    let at = |secs: i64| Timestamp::from_micros(t0.as_micros() + secs * 1_000_000).unwrap();
    assert!(
        other
            .record_assertion_jti(&bot, "x", at(10), t0)
            .await
            .unwrap()
    );
    assert!(
        !s.record_assertion_jti(&bot, "x", at(20), at(5))
            .await
            .unwrap()
    );
    assert!(
        s.record_assertion_jti(&bot, "x", at(30), at(11))
            .await
            .unwrap()
    );
    assert!(
        !other
            .record_assertion_jti(&bot, "x", at(40), at(12))
            .await
            .unwrap()
    );
    // The same jti from another agent is a different key.
    let other_agent = AgentId::new("bot2").unwrap();
    assert!(
        s.record_assertion_jti(&other_agent, "x", at(40), at(12))
            .await
            .unwrap()
    );
    db.cleanup().await;
}
on_both_backends!(assertion_jtis_expire);

/// Console sessions and OIDC sign-ins in progress: stored by hash, seen by every store instance
/// on the database, expired by time, bounded per user, taken once.
async fn console_sessions_and_pending_sign_ins(db: Db) {
    use writ_store::{Database, SessionRecord};

    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let s: Arc<dyn Database> = writ_store::open_database(Some(&db.url()), dir.path())
            .await
            .unwrap();
        s
    };
    let (s, other) = (open().await, open().await);
    s.add_user(&user("alice", false, &[])).await.unwrap();
    let alice = UserId::new("alice").unwrap();
    let t0 = now();
    let at = |secs: i64| Timestamp::from_micros(t0.as_micros() + secs * 1_000_000).unwrap();
    let session = |expires: i64| SessionRecord {
        user: alice.clone(),
        sign_in: json!({"method": "oidc", "issuer": "https://idp.example"}),
        created_at: at(expires - 3600),
        expires_at: at(expires),
    };

    s.add_session(&[1; 32], &session(3600), 3).await.unwrap();
    assert_eq!(
        other.session(&[1; 32], t0).await.unwrap(),
        Some(session(3600)),
        "another instance sees the session"
    );
    assert_eq!(
        s.session(&[1; 32], at(3600)).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(s.session(&[9; 32], t0).await.unwrap(), None, "unknown");

    // At most three per user: a fourth ends the earliest opened.
    for (n, expires) in [(2u8, 3700), (3, 3800), (4, 3900)] {
        other
            .add_session(&[n; 32], &session(expires), 3)
            .await
            .unwrap();
    }
    assert_eq!(
        s.session(&[1; 32], t0).await.unwrap(),
        None,
        "the oldest was ended"
    );
    for n in [2u8, 3, 4] {
        assert!(
            s.session(&[n; 32], t0).await.unwrap().is_some(),
            "session {n}"
        );
    }
    assert!(s.remove_session(&[4; 32]).await.unwrap());
    assert!(
        !other.remove_session(&[4; 32]).await.unwrap(),
        "already ended"
    );
    assert_eq!(other.remove_user_sessions(&alice).await.unwrap(), 2);
    assert_eq!(s.session(&[2; 32], t0).await.unwrap(), None);

    // A session needs a user that exists.
    let mut ghost = session(3600);
    ghost.user = UserId::new("ghost").unwrap();
    assert!(s.add_session(&[5; 32], &ghost, 3).await.is_err());

    // Pending sign-ins: taken once, on any instance; not after they expire; bounded in number.
    let data = json!({"state": "s", "nonce": "n"});
    s.add_pending_sign_in(&[1; 32], &data, at(600), t0, 2)
        .await
        .unwrap();
    assert_eq!(
        other.take_pending_sign_in(&[1; 32], t0).await.unwrap(),
        Some(data.clone())
    );
    assert_eq!(
        s.take_pending_sign_in(&[1; 32], t0).await.unwrap(),
        None,
        "used"
    );
    s.add_pending_sign_in(&[2; 32], &data, at(1), t0, 2)
        .await
        .unwrap();
    assert_eq!(
        s.take_pending_sign_in(&[2; 32], at(2)).await.unwrap(),
        None,
        "expired"
    );
    for n in [3u8, 4, 5] {
        s.add_pending_sign_in(&[n; 32], &data, at(600 + i64::from(n)), t0, 2)
            .await
            .unwrap();
    }
    assert_eq!(
        s.take_pending_sign_in(&[3; 32], t0).await.unwrap(),
        None,
        "dropped"
    );
    assert!(
        s.take_pending_sign_in(&[5; 32], t0)
            .await
            .unwrap()
            .is_some()
    );
    drop((s, other));
    db.cleanup().await;
}
on_both_backends!(console_sessions_and_pending_sign_ins);

/// Password rows: set, replace, clear; failures counted atomically across two store instances;
/// the lock is 2^(failures-5) seconds from the fifth failure on, capped at 15 minutes.
async fn password_rows_and_lockout(db: Db) {
    let s = identity(&db).await;
    let other = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let alice = UserId::new("alice").unwrap();
    let nobody = UserId::new("nobody").unwrap();
    let t0 = now();
    let at = |secs: i64| Timestamp::from_micros(t0.as_micros() + secs * 1_000_000).unwrap();

    assert!(s.password(&alice).await.unwrap().is_none());
    assert!(matches!(
        s.set_password(&nobody, "$argon2id$x", t0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.record_password_failure(&alice, t0)
            .await
            .unwrap()
            .is_none()
    );

    s.set_password(&alice, "$argon2id$first", t0).await.unwrap();
    let p = other.password(&alice).await.unwrap().unwrap();
    assert_eq!((p.phc.as_str(), p.set_at), ("$argon2id$first", t0));
    assert_eq!((p.failures, p.locked_until), (0, None));
    assert!(!format!("{p:?}").contains("first"), "Debug shows the hash");

    // Four failures lock nothing; from the fifth the lock doubles: 1 s, 2 s, 4 s, ... 15 min.
    for n in 1..=4 {
        let f = s
            .record_password_failure(&alice, at(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((f.failures, f.locked_until), (n, None));
    }
    for (n, secs) in [
        (5, 1),
        (6, 2),
        (7, 4),
        (8, 8),
        (14, 512),
        (15, 900),
        (40, 900),
    ] {
        let mut f = None;
        while f.is_none_or(|f: writ_store::identity::PasswordFailures| f.failures < n) {
            f = other
                .record_password_failure(&alice, at(100))
                .await
                .unwrap();
        }
        let f = f.unwrap();
        assert_eq!(f.failures, n);
        assert_eq!(f.locked_until, Some(at(100 + secs)), "after {n} failures");
    }
    let p = s.password(&alice).await.unwrap().unwrap();
    assert_eq!((p.failures, p.locked_until), (40, Some(at(1000))));
    s.reset_password_failures(&alice).await.unwrap();
    let p = s.password(&alice).await.unwrap().unwrap();
    assert_eq!((p.failures, p.locked_until), (0, None));

    // Concurrent failures over both instances are all counted.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        let user = alice.clone();
        tasks.push(tokio::spawn(async move {
            store.record_password_failure(&user, now()).await.unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(s.password(&alice).await.unwrap().unwrap().failures, 20);

    // A new password replaces the hash and its set time, and clears failures and lock.
    s.set_password(&alice, "$argon2id$second", at(5))
        .await
        .unwrap();
    let p = s.password(&alice).await.unwrap().unwrap();
    assert_eq!((p.phc.as_str(), p.set_at), ("$argon2id$second", at(5)));
    assert_eq!((p.failures, p.locked_until), (0, None));

    assert!(other.clear_password(&alice).await.unwrap());
    assert!(!s.clear_password(&alice).await.unwrap());
    assert!(s.password(&alice).await.unwrap().is_none());
    db.cleanup().await;
}
on_both_backends!(password_rows_and_lockout);
