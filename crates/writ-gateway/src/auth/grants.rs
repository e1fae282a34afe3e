//! The grant check as the pipeline runs it: the rules are `writ_identity::Grant::check`'s, the
//! spend is the store's one conditional `UPDATE` (`IdentityStore::consume_grant`), so concurrent
//! uses never overspend and a revocation takes effect at once.

use writ_core::Timestamp;
use writ_identity::{ActionAttempt, GrantDenial, GrantId, Usage};
use writ_store::StoreError;
use writ_store::identity::IdentityStore;

/// Checks `attempt` against grant `id` and spends its budget: the grant check as the pipeline
/// runs it. A denial says, in words, which rule failed.
pub async fn use_grant(
    store: &dyn IdentityStore,
    id: &GrantId,
    attempt: &ActionAttempt<'_>,
    now: Timestamp,
) -> Result<Result<Usage, GrantDenial>, StoreError> {
    // Two tries: if a concurrent use spent the budget between our check and our update, the
    // second check explains the refusal with current numbers.
    for _ in 0..2 {
        let Some(stored) = store.grant(id).await? else {
            return Err(StoreError::NotFound(format!("grant {id}")));
        };
        let amount = match stored.grant.check(attempt, now, stored.usage) {
            Ok(amount) => amount,
            Err(denial) => return Ok(Err(denial)),
        };
        if let Some(usage) = store.consume_grant(id, amount, now).await? {
            return Ok(Ok(usage));
        }
    }
    Err(StoreError::InvalidRequest(format!(
        "grant {id} is in heavy concurrent use and its budget could not be spent; retry"
    )))
}
