//! The grant check as the pipeline runs it: `writ_gateway::auth::use_grant` over a real store.

use serde_json::json;
use writ_core::Timestamp;
use writ_gateway::auth::use_grant;
use writ_identity::{ActionAttempt, AgentId, Amount, GrantDenial};
use writ_store::StoreError;

use crate::{Db, alice, alice_and_bot, grant_spec, identity, now};

/// The grant check spends the budget, says in words which rule failed, and sees a revocation
/// made on another store instance (another replica) at its very next check.
async fn use_grant_spends_and_sees_revocation_at_once(db: Db) {
    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let grant = grant_spec(Some(5), None)
        .authorize(&alice(), now())
        .unwrap();
    s.add_grant(&grant).await.unwrap();

    let bot = AgentId::new("bot").unwrap();
    let args = json!({"amount": 20});
    let attempt = ActionAttempt {
        agent: &bot,
        action: "payments.send",
        resource: None,
        arguments: &args,
    };
    let usage = use_grant(s.as_ref(), &grant.id, &attempt, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(usage.uses, 1);
    let big = json!({"amount": 501});
    let denied = use_grant(
        s.as_ref(),
        &grant.id,
        &ActionAttempt {
            arguments: &big,
            ..attempt
        },
        now(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        denied
            .to_string()
            .contains("amount 501 is above the grant's maximum 500"),
        "{denied}"
    );

    // A second store instance (another replica) sees the revocation on its very next check.
    let replica = identity(&db).await;
    assert!(s.revoke_grant(&grant.id, now()).await.unwrap());
    let denied = use_grant(replica.as_ref(), &grant.id, &attempt, now())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(denied, GrantDenial::Revoked { .. }), "{denied}");
    db.cleanup().await;
}
on_both_backends!(use_grant_spends_and_sees_revocation_at_once);

/// Many concurrent uses, through several store instances, never spend more than the budget.
async fn concurrent_uses_cannot_overspend(db: Db) {
    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    // Count-limited: 10 uses (no sum budget, so nothing is summed).
    let by_count = grant_spec(Some(10), None)
        .authorize(&alice(), now())
        .unwrap();
    // Sum-limited: 100 in total at 7 a time, so 14 uses.
    let by_sum = grant_spec(None, Some(100))
        .authorize(&alice(), now())
        .unwrap();
    s.add_grant(&by_count).await.unwrap();
    s.add_grant(&by_sum).await.unwrap();
    let stores = [s.clone(), identity(&db).await, identity(&db).await];
    for (grant, expected_uses, expected_sum) in [(&by_count, 10u64, 0i64), (&by_sum, 14, 98)] {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = stores[i % stores.len()].clone();
            let id = grant.id.clone();
            tasks.push(tokio::spawn(async move {
                let bot = AgentId::new("bot").unwrap();
                let args = json!({"amount": 7});
                let attempt = ActionAttempt {
                    agent: &bot,
                    action: "payments.send",
                    resource: None,
                    arguments: &args,
                };
                loop {
                    match use_grant(store.as_ref(), &id, &attempt, Timestamp::now()).await {
                        Ok(outcome) => return outcome.is_ok(),
                        // Heavy contention: retry, as a caller would.
                        Err(StoreError::InvalidRequest(_)) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap() {
                ok += 1;
            }
        }
        assert_eq!(ok, expected_uses, "successful uses of {}", grant.id);
        let usage = s.grant(&grant.id).await.unwrap().unwrap().usage;
        assert_eq!(usage.uses, expected_uses);
        assert_eq!(usage.sum, Amount(expected_sum * 1_000_000));
    }
    db.cleanup().await;
}
on_both_backends!(concurrent_uses_cannot_overspend);
