//! Actions and approvals on both backends: each state change commits with its audit entries, a
//! refused change appends nothing, and refusals inside a group commit leave the others intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Db, Kind};
use serde_json::json;
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_store::{
    ActionFilter, ActionRow, ActionState, ApprovalRow, ApprovalState, Change, Database, Decision,
    DecisionRow, EntryFilter, StoreError, VerifyOptions,
};

async fn database(db: &Db) -> Arc<dyn Database> {
    match &db.kind {
        Kind::Sqlite { path } => {
            Arc::new(writ_store::sqlite::SqliteStore::open(path).await.unwrap())
        }
        Kind::Postgres { url, .. } => {
            Arc::new(writ_store::postgres::PgStore::connect(url).await.unwrap())
        }
    }
}

fn action(id: &ActionId, agent: &str, key: Option<&str>, state: ActionState) -> ActionRow {
    let now = Timestamp::now();
    ActionRow {
        id: id.clone(),
        agent: agent.into(),
        user: "alice".into(),
        grant: Some("grt_1".into()),
        connector: "github".into(),
        operation: "create_issue".into(),
        action_hash: "ab".repeat(32),
        idempotency_key: key.map(str::to_owned),
        state,
        request: json!({"args": {"repo": "acme/web"}, "intent": "file a bug"}),
        result: None,
        created: now,
        updated: now,
    }
}

fn entry(id: &ActionId, kind: EntryKind) -> NewEntry {
    NewEntry::new(
        id.clone(),
        kind,
        Some("agent:bot".into()),
        json!({"step": kind.as_str()}),
    )
    .unwrap()
}

async fn changes_commit_with_their_entries(db: Db) {
    let s = database(&db).await;
    let id = ActionId::generate();
    let receipts = s
        .commit(
            vec![Change::InsertAction(action(
                &id,
                "bot",
                Some("k1"),
                ActionState::Executing,
            ))],
            vec![
                entry(&id, EntryKind::Requested),
                entry(&id, EntryKind::Evaluated),
            ],
        )
        .await
        .unwrap();
    assert_eq!(receipts.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
    let stored = s.action(&id).await.unwrap().unwrap();
    assert_eq!(stored.state, ActionState::Executing);
    assert_eq!(stored.request["intent"], "file a bug");
    assert_eq!(s.action_by_key("bot", "k1").await.unwrap().unwrap().id, id);
    assert!(s.action_by_key("other-bot", "k1").await.unwrap().is_none());

    // The same key again is refused, and neither its row nor its entries are written.
    let dup = ActionId::generate();
    let err = s
        .commit(
            vec![Change::InsertAction(action(
                &dup,
                "bot",
                Some("k1"),
                ActionState::Executing,
            ))],
            vec![entry(&dup, EntryKind::Requested)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref m) if m.contains("k1")),
        "{err}"
    );
    assert!(s.action(&dup).await.unwrap().is_none());
    assert_eq!(s.size().await.unwrap(), 2);

    // Compare-and-set on the state: the second finish is refused and appends nothing.
    let finish = |result| Change::SetActionState {
        id: id.clone(),
        from: vec![ActionState::Executing],
        to: ActionState::Succeeded,
        result: Some(result),
        time: Timestamp::now(),
    };
    s.commit(
        vec![finish(json!({"ok": 1}))],
        vec![entry(&id, EntryKind::Executed)],
    )
    .await
    .unwrap();
    let err = s
        .commit(
            vec![finish(json!({"ok": 2}))],
            vec![entry(&id, EntryKind::Executed)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("is succeeded")),
        "{err}"
    );
    let stored = s.action(&id).await.unwrap().unwrap();
    assert_eq!(stored.state, ActionState::Succeeded);
    assert_eq!(stored.result, Some(json!({"ok": 1})));
    assert_eq!(s.size().await.unwrap(), 3);
    let missing = Change::SetActionState {
        id: ActionId::generate(),
        from: vec![ActionState::Executing],
        to: ActionState::Failed,
        result: None,
        time: Timestamp::now(),
    };
    let err = s.commit(vec![missing], vec![]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // A multi-change job is all or nothing: the second change fails, so the first is undone.
    let other = ActionId::generate();
    let err = s
        .commit(
            vec![
                Change::InsertAction(action(&other, "bot", Some("k2"), ActionState::Executing)),
                Change::InsertAction(action(&dup, "bot", Some("k1"), ActionState::Executing)),
            ],
            vec![entry(&other, EntryKind::Requested)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert!(s.action(&other).await.unwrap().is_none());
    assert_eq!(s.size().await.unwrap(), 3);
    drop(s);
    db.cleanup().await;
}
on_both_backends!(changes_commit_with_their_entries);

async fn approvals_and_decisions(db: Db) {
    let s = database(&db).await;
    let id = ActionId::generate();
    let now = Timestamp::now();
    let approval = ApprovalRow {
        id: "apr_1".into(),
        action_id: id.clone(),
        action_hash: "cd".repeat(32),
        state: ApprovalState::Pending,
        user: "alice".into(),
        approvers: vec!["bob".into(), "group:finance".into()],
        quorum: 2,
        expires: Timestamp::from_micros(now.as_micros() + 3_600_000_000).unwrap(),
        reason: Some("payments over 100 need two approvers".into()),
        created: now,
        updated: now,
    };
    s.commit(
        vec![
            Change::InsertAction(action(&id, "bot", None, ActionState::PendingApproval)),
            Change::InsertApproval(approval.clone()),
        ],
        vec![entry(&id, EntryKind::ApprovalRequested)],
    )
    .await
    .unwrap();
    assert_eq!(s.approval("apr_1").await.unwrap().unwrap(), approval);
    assert_eq!(
        s.approval_for_action(&id).await.unwrap().unwrap().id,
        "apr_1"
    );
    assert_eq!(
        s.approvals(Some(ApprovalState::Pending), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.approvals(Some(ApprovalState::Approved), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let decide = |approver: &str, decision| {
        Change::InsertDecision(DecisionRow {
            approval_id: "apr_1".into(),
            approver: approver.into(),
            decision,
            comment: Some(format!("{approver} looked")),
            time: Timestamp::now(),
        })
    };
    s.commit(
        vec![decide("bob", Decision::Approve)],
        vec![entry(&id, EntryKind::ApprovalDecided)],
    )
    .await
    .unwrap();
    // One decision per approver: bob cannot change his mind or vote twice.
    let err = s
        .commit(
            vec![decide("bob", Decision::Deny)],
            vec![entry(&id, EntryKind::ApprovalDecided)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref m) if m.contains("bob")),
        "{err}"
    );
    // The quorum-reaching decision moves approval and action together.
    s.commit(
        vec![
            decide("carol", Decision::Approve),
            Change::SetApprovalState {
                id: "apr_1".into(),
                from: vec![ApprovalState::Pending],
                to: ApprovalState::Approved,
                time: Timestamp::now(),
            },
            Change::SetActionState {
                id: id.clone(),
                from: vec![ActionState::PendingApproval],
                to: ActionState::Executing,
                result: None,
                time: Timestamp::now(),
            },
        ],
        vec![
            entry(&id, EntryKind::ApprovalDecided),
            entry(&id, EntryKind::Evaluated),
        ],
    )
    .await
    .unwrap();
    let decisions = s.decisions("apr_1").await.unwrap();
    assert_eq!(
        decisions
            .iter()
            .map(|d| (d.approver.as_str(), d.decision))
            .collect::<Vec<_>>(),
        [("bob", Decision::Approve), ("carol", Decision::Approve)]
    );
    assert_eq!(
        s.approval("apr_1").await.unwrap().unwrap().state,
        ApprovalState::Approved
    );
    assert_eq!(
        s.action(&id).await.unwrap().unwrap().state,
        ActionState::Executing
    );
    let entries = s
        .query(&EntryFilter {
            action_id: Some(id.as_str().into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 4);

    // Decisions are final in the database too.
    let err = db
        .exec("UPDATE approval_decisions SET decision = 'deny' WHERE approver = 'bob'")
        .await
        .unwrap_err();
    assert!(err.contains("refused"), "{err}");
    drop(s);
    db.cleanup().await;
}
on_both_backends!(approvals_and_decisions);

/// Many callers in the same group commits, half of them refused: each refusal undoes only its
/// own job, every accepted job is complete, and the log verifies.
async fn refusals_inside_group_commits(db: Db) {
    let s = database(&db).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = ActionId::generate();
            // Two callers per key: exactly one of each pair can win.
            let key = format!("key-{}", i / 2);
            let r = s
                .commit(
                    vec![Change::InsertAction(action(
                        &id,
                        "bot",
                        Some(&key),
                        ActionState::Denied,
                    ))],
                    vec![
                        entry(&id, EntryKind::Requested),
                        entry(&id, EntryKind::Responded),
                    ],
                )
                .await;
            (id, key, r)
        }));
    }
    let mut won = std::collections::HashMap::new();
    for t in tasks {
        let (id, key, r) = t.await.unwrap();
        match r {
            Ok(receipts) => {
                assert_eq!(receipts.len(), 2);
                assert!(won.insert(key, id).is_none(), "two winners for one key");
            }
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won.len(), 32);
    assert_eq!(s.size().await.unwrap(), 64);
    for (key, id) in &won {
        assert_eq!(&s.action_by_key("bot", key).await.unwrap().unwrap().id, id);
    }
    let listed = s
        .actions(&ActionFilter {
            agent: Some("bot".into()),
            states: vec![ActionState::Denied],
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 32);
    assert!(
        listed.windows(2).all(|w| w[0].created >= w[1].created),
        "newest first"
    );
    let none = s
        .actions(&ActionFilter {
            user: Some("mallory".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let report = writ_store::verify_log(s.as_ref(), &VerifyOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.size, 64);
    drop(s);
    db.cleanup().await;
}
on_both_backends!(refusals_inside_group_commits);

/// A grant's budget is spent in the transaction that records the action: a refused spend undoes
/// the action row and appends nothing, and concurrent spends never exceed the budget.
async fn grant_budget_spent_with_the_action(db: Db) {
    use writ_identity::{AgentId, GrantSpec, Principal, UserId};
    use writ_store::identity::{AgentRecord, UserRecord};
    let s = database(&db).await;
    let now = Timestamp::now();
    s.add_user(&UserRecord {
        id: UserId::new("alice").unwrap(),
        display_name: "Alice".into(),
        admin: false,
        groups: vec![],
        created_at: now,
    })
    .await
    .unwrap();
    s.add_agent(&AgentRecord::new(
        AgentId::new("bot").unwrap(),
        UserId::new("alice").unwrap(),
        None,
        now,
    ))
    .await
    .unwrap();
    let mut spec: GrantSpec = serde_json::from_value(json!({
        "user": "alice", "agent": "bot", "actions": ["github.*"], "expires_at": "2099-01-01T00:00:00Z",
    }))
    .unwrap();
    spec.max_uses = Some(5);
    let grant = spec
        .authorize(
            &Principal::User {
                id: UserId::new("alice").unwrap(),
                admin: false,
            },
            now,
        )
        .unwrap();
    s.add_grant(&grant).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = s.clone();
        let grant = grant.id.as_str().to_owned();
        tasks.push(tokio::spawn(async move {
            let id = ActionId::generate();
            let r = s
                .commit(
                    vec![
                        Change::InsertAction(action(&id, "bot", None, ActionState::Executing)),
                        Change::SpendGrant {
                            grant,
                            amount_micros: 0,
                            now: Timestamp::now(),
                        },
                    ],
                    vec![entry(&id, EntryKind::Requested)],
                )
                .await;
            (id, r)
        }));
    }
    let mut ran = 0;
    for t in tasks {
        let (id, r) = t.await.unwrap();
        match r {
            Ok(_) => ran += 1,
            Err(StoreError::GrantRefused(m)) => {
                assert!(m.contains("budget"), "{m}");
                assert!(
                    s.action(&id).await.unwrap().is_none(),
                    "a refused spend left its action"
                );
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(ran, 5, "exactly the budget's uses ran");
    assert_eq!(
        s.size().await.unwrap(),
        5,
        "refused spends appended nothing"
    );
    assert_eq!(s.grant(&grant.id).await.unwrap().unwrap().usage.uses, 5);
    drop(s);
    db.cleanup().await;
}
on_both_backends!(grant_budget_spent_with_the_action);
