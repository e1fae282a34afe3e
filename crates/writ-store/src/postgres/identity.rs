//! [`IdentityStore`] on PostgreSQL. Multi-statement writes run in a transaction under a
//! transaction-level advisory lock on the row set they touch, so replicas cannot interleave them.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, Grant, GrantId, Usage, UserId};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, SealedCredential};

use super::{PgStore, db};
use crate::StoreError;
use crate::identity::{
    ADD_AGENT, ADD_API_KEY, ADD_CREDENTIAL, ADD_GRANT, ADD_USER, ADD_USER_GROUP, AGENT_BY_ID,
    AGENTS, AgentRecord, ApiKeyRecord, CLAIM_NAME, CLEAR_PASSWORD, CONSUME_GRANT,
    CREDENTIAL_STATES, CredentialVersion, DEMOTE_CURRENT_CREDENTIAL, GRANT_BY_ID, GRANT_COLUMNS,
    GRANT_EXISTS, GrantFilter, IdentityStore, KeySubject, LIVE_API_KEY, LOCK_AFTER_FAILURES,
    MAX_LOCK_SECS, NAME_HOLDER, NEXT_KEY_GENERATION, PASSWORD, PRUNE_ASSERTION_JTIS,
    PasswordFailures, PasswordRecord, RECORD_ASSERTION_JTI, RESET_PASSWORD_FAILURES,
    RETIRE_CREDENTIAL, REVOKE_API_KEYS, REVOKE_GRANT, RawAgent, SEALED_CREDENTIAL,
    SET_AGENT_DISABLED, SET_AGENT_KEY, SET_PASSWORD, StoredGrant, USER_BY_ID, USER_GROUPS,
    UserRecord, api_key_row, check_retire, decode_grant, encode_grant, name_conflict,
    password_failures, password_row, sealed_row, subject_parts, usage_row, user_row,
    version_number, version_row, version_taken,
};

/// `what` already exists if the insert broke a unique key; otherwise the error of `op`.
fn unique_or(op: &'static str, what: String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::AlreadyExists(what),
        _ => StoreError::db(op, e),
    }
}

/// The user of `row` (`id, display_name, is_admin, created_us`), with its groups.
async fn load_user<'e, E>(conn: E, row: PgRow) -> Result<UserRecord, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let op = "read user";
    let id: String = row.try_get(0).map_err(db(op))?;
    let groups: Vec<String> = sqlx::query_scalar(USER_GROUPS)
        .bind(&id)
        .fetch_all(conn)
        .await
        .map_err(db(op))?;
    user_row(
        id,
        row.try_get(1).map_err(db(op))?,
        row.try_get(2).map_err(db(op))?,
        row.try_get(3).map_err(db(op))?,
        groups,
    )
}

/// Takes `name` for a principal of `kind` in the namespace users and agents share.
async fn claim_name(
    tx: &mut sqlx::PgConnection,
    name: &str,
    kind: &'static str,
) -> Result<(), StoreError> {
    let op = "claim name";
    let claimed = sqlx::query(CLAIM_NAME)
        .bind(name)
        .bind(kind)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?
        .rows_affected();
    if claimed == 0 {
        let holder: String = sqlx::query_scalar(NAME_HOLDER)
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db(op))?;
        return Err(name_conflict(name, kind, &holder));
    }
    Ok(())
}

fn agent_from(row: &PgRow) -> Result<AgentRecord, StoreError> {
    let op = "read agent";
    RawAgent {
        id: row.try_get(0).map_err(db(op))?,
        owner: row.try_get(1).map_err(db(op))?,
        public_key: row.try_get(2).map_err(db(op))?,
        created_us: row.try_get(3).map_err(db(op))?,
        disabled_us: row.try_get(4).map_err(db(op))?,
        key_generation: row.try_get(5).map_err(db(op))?,
    }
    .decode()
}

fn grant_from(row: &PgRow) -> Result<StoredGrant, StoreError> {
    let op = "read grant";
    let spec: String = row.try_get(0).map_err(db(op))?;
    decode_grant(
        &spec,
        row.try_get(1).map_err(db(op))?,
        row.try_get(2).map_err(db(op))?,
        row.try_get(3).map_err(db(op))?,
        row.try_get(4).map_err(db(op))?,
        row.try_get(5).map_err(db(op))?,
        row.try_get(6).map_err(db(op))?,
    )
}

/// Serialises the writers of one credential's versions across replicas.
const CREDENTIAL_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.vault.' || $1 || '/' || $2))";

/// The version number the next put of credential (`$1`, owner `$2`) gets.
const NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0)::BIGINT + 1 FROM vault_credentials
     WHERE name = $1 AND owner = $2";

#[async_trait]
impl IdentityStore for PgStore {
    async fn add_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let op = "add user";
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        claim_name(&mut tx, user.id.as_str(), "user").await?;
        sqlx::query(ADD_USER)
            .bind(user.id.as_str())
            .bind(&user.display_name)
            .bind(user.admin)
            .bind(user.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(unique_or(op, format!("user {}", user.id)))?;
        for g in &user.groups {
            sqlx::query(ADD_USER_GROUP)
                .bind(user.id.as_str())
                .bind(g)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        tx.commit().await.map_err(db(op))
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(USER_BY_ID)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read user"))?;
        match row {
            Some(row) => Ok(Some(load_user(self.pool(), row).await?)),
            None => Ok(None),
        }
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, display_name, is_admin, created_us FROM identity_users ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(db("list users"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(load_user(self.pool(), row).await?);
        }
        Ok(out)
    }

    async fn add_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        if self.user(&agent.owner).await?.is_none() {
            return Err(StoreError::NotFound(format!(
                "user {} (the agent's owner)",
                agent.owner
            )));
        }
        let op = "add agent";
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        claim_name(&mut tx, agent.id.as_str(), "agent").await?;
        sqlx::query(ADD_AGENT)
            .bind(agent.id.as_str())
            .bind(agent.owner.as_str())
            .bind(&agent.public_key)
            .bind(agent.created_at.as_micros())
            .bind(agent.disabled_at.map(Timestamp::as_micros))
            .bind(i64::try_from(agent.key_generation).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(unique_or(op, format!("agent {}", agent.id)))?;
        tx.commit().await.map_err(db(op))
    }

    async fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        sqlx::query(AGENT_BY_ID)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read agent"))?
            .map(|r| agent_from(&r))
            .transpose()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        sqlx::query(AGENTS)
            .fetch_all(self.pool())
            .await
            .map_err(db("list agents"))?
            .iter()
            .map(agent_from)
            .collect()
    }

    async fn set_agent_public_key(
        &self,
        id: &AgentId,
        jwk: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(SET_AGENT_KEY)
            .bind(id.as_str())
            .bind(jwk)
            .execute(self.pool())
            .await
            .map_err(db("set agent key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent {id}")));
        }
        Ok(())
    }

    async fn set_agent_disabled(
        &self,
        id: &AgentId,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(SET_AGENT_DISABLED)
            .bind(id.as_str())
            .bind(at.map(Timestamp::as_micros))
            .execute(self.pool())
            .await
            .map_err(db("disable agent"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("agent {id}")));
        }
        Ok(())
    }

    async fn add_api_key(
        &self,
        key_hash: &[u8; 32],
        record: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        let (kind, id) = subject_parts(&record.subject);
        sqlx::query(ADD_API_KEY)
            .bind(&key_hash[..])
            .bind(&record.key_id)
            .bind(kind)
            .bind(id)
            .bind(record.created_at.as_micros())
            .bind(record.revoked_at.map(Timestamp::as_micros))
            .execute(self.pool())
            .await
            .map_err(db("add api key"))?;
        Ok(())
    }

    async fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let op = "read api key";
        let row = sqlx::query(LIVE_API_KEY)
            .bind(&key_hash[..])
            .fetch_optional(self.pool())
            .await
            .map_err(db(op))?;
        row.map(|r| {
            let kind: String = r.try_get(1).map_err(db(op))?;
            api_key_row(
                r.try_get(0).map_err(db(op))?,
                &kind,
                r.try_get(2).map_err(db(op))?,
                r.try_get(3).map_err(db(op))?,
                r.try_get(4).map_err(db(op))?,
            )
        })
        .transpose()
    }

    async fn revoke_api_keys(
        &self,
        subject: &KeySubject,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let op = "revoke api keys";
        let (kind, id) = subject_parts(subject);
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        let done = sqlx::query(REVOKE_API_KEYS)
            .bind(kind)
            .bind(id)
            .bind(at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        if kind == "agent" {
            sqlx::query(NEXT_KEY_GENERATION)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        tx.commit().await.map_err(db(op))?;
        Ok(done.rows_affected())
    }

    async fn add_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let spec = encode_grant(g)?;
        sqlx::query(ADD_GRANT)
            .bind(g.id.as_str())
            .bind(g.spec.user.as_str())
            .bind(g.spec.agent.as_str())
            .bind(spec)
            .bind(g.created_by.as_str())
            .bind(g.created_at.as_micros())
            .bind(g.spec.expires_at.as_micros())
            .bind(g.revoked_at.map(Timestamp::as_micros))
            .bind(
                g.spec
                    .max_uses
                    .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            )
            .bind(g.spec.sum_budget.as_ref().map(|b| b.max.micros()))
            .execute(self.pool())
            .await
            .map_err(unique_or("add grant", format!("grant {}", g.id)))?;
        Ok(())
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        sqlx::query(GRANT_BY_ID)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read grant"))?
            .map(|r| grant_from(&r))
            .transpose()
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError> {
        // Only a constant column list is interpolated; values are bound.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM identity_grants
             WHERE ($1::TEXT IS NULL OR user_id = $1) AND ($2::TEXT IS NULL OR agent_id = $2)
             ORDER BY id"
        )))
        .bind(filter.user.as_ref().map(UserId::as_str))
        .bind(filter.agent.as_ref().map(AgentId::as_str))
        .fetch_all(self.pool())
        .await
        .map_err(db("list grants"))?
        .iter()
        .map(grant_from)
        .collect()
    }

    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool, StoreError> {
        let op = "revoke grant";
        let done = sqlx::query(REVOKE_GRANT)
            .bind(id.as_str())
            .bind(at.as_micros())
            .execute(self.pool())
            .await
            .map_err(db(op))?;
        if done.rows_affected() == 0 {
            let exists: Option<i32> = sqlx::query_scalar(GRANT_EXISTS)
                .bind(id.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(db(op))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("grant {id}")));
            }
        }
        Ok(done.rows_affected() == 1)
    }

    async fn consume_grant(
        &self,
        id: &GrantId,
        amount: Amount,
        now: Timestamp,
    ) -> Result<Option<Usage>, StoreError> {
        // One UPDATE: PostgreSQL takes the row lock and re-evaluates the WHERE clause on the
        // newest row version (READ COMMITTED), so two concurrent uses cannot both pass the
        // budget test on the same old numbers.
        let row: Option<(i64, i64)> = sqlx::query_as(CONSUME_GRANT)
            .bind(id.as_str())
            .bind(amount.micros())
            .bind(now.as_micros())
            .fetch_optional(self.pool())
            .await
            .map_err(db("consume grant"))?;
        Ok(row.map(|(uses, sum)| usage_row(uses, sum)))
    }

    async fn put_credential(
        &self,
        sealed: &SealedCredential,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "store credential";
        let r = &sealed.reference;
        let (name, owner) = (r.name.as_str(), r.scope.owner_key());
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        sqlx::query(CREDENTIAL_LOCK)
            .bind(name)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let next: i64 = sqlx::query_scalar(NEXT_VERSION)
            .bind(name)
            .bind(owner)
            .fetch_one(&mut *tx)
            .await
            .map_err(db(op))?;
        if next != i64::from(r.version) {
            return Err(version_taken(r, next));
        }
        sqlx::query(DEMOTE_CURRENT_CREDENTIAL)
            .bind(name)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        sqlx::query(ADD_CREDENTIAL)
            .bind(name)
            .bind(owner)
            .bind(next)
            .bind(&sealed.master_key_id)
            .bind(&sealed.wrapped_key)
            .bind(&sealed.ciphertext)
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))
    }

    async fn next_credential_version(
        &self,
        name: &CredentialName,
        scope: &CredentialScope,
    ) -> Result<u32, StoreError> {
        let next: i64 = sqlx::query_scalar(NEXT_VERSION)
            .bind(name.as_str())
            .bind(scope.owner_key())
            .fetch_one(self.pool())
            .await
            .map_err(db("read credential versions"))?;
        version_number(next)
    }

    async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError> {
        let op = "list credentials";
        let rows = sqlx::query(
            "SELECT name, owner, version, state, master_key_id, created_us, retired_us
             FROM vault_credentials WHERE $1::TEXT IS NULL OR name = $1
             ORDER BY name, owner, version",
        )
        .bind(name.map(CredentialName::as_str))
        .fetch_all(self.pool())
        .await
        .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                version_row(
                    r.try_get(0).map_err(db(op))?,
                    r.try_get(1).map_err(db(op))?,
                    r.try_get(2).map_err(db(op))?,
                    r.try_get(3).map_err(db(op))?,
                    r.try_get(4).map_err(db(op))?,
                    r.try_get(5).map_err(db(op))?,
                    r.try_get(6).map_err(db(op))?,
                )
            })
            .collect()
    }

    async fn sealed_credential(
        &self,
        reference: &CredentialRef,
    ) -> Result<Option<SealedCredential>, StoreError> {
        let row = sqlx::query_as(SEALED_CREDENTIAL)
            .bind(reference.name.as_str())
            .bind(reference.scope.owner_key())
            .bind(i64::from(reference.version))
            .fetch_optional(self.pool())
            .await
            .map_err(db("read credential"))?;
        sealed_row(reference, row)
    }

    async fn retire_credential(
        &self,
        reference: &CredentialRef,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "retire credential";
        let (name, owner) = (reference.name.as_str(), reference.scope.owner_key());
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        sqlx::query(CREDENTIAL_LOCK)
            .bind(name)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let rows: Vec<(i64, String)> = sqlx::query_as(CREDENTIAL_STATES)
            .bind(name)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(op))?;
        check_retire(reference, rows)?;
        sqlx::query(RETIRE_CREDENTIAL)
            .bind(name)
            .bind(owner)
            .bind(i64::from(reference.version))
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))
    }

    async fn record_assertion_jti(
        &self,
        agent: &AgentId,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let op = "record assertion jti";
        sqlx::query(PRUNE_ASSERTION_JTIS)
            .bind(now.as_micros())
            .execute(self.pool())
            .await
            .map_err(db(op))?;
        let done = sqlx::query(RECORD_ASSERTION_JTI)
            .bind(agent.as_str())
            .bind(jti)
            .bind(expires_at.as_micros())
            .execute(self.pool())
            .await
            .map_err(db(op))?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_password(
        &self,
        user: &UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(SET_PASSWORD)
            .bind(user.as_str())
            .bind(phc)
            .bind(now.as_micros())
            .execute(self.pool())
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StoreError::NotFound(format!("user {user}"))
                }
                _ => StoreError::db("set password", e),
            })?;
        Ok(())
    }

    async fn clear_password(&self, user: &UserId) -> Result<bool, StoreError> {
        let done = sqlx::query(CLEAR_PASSWORD)
            .bind(user.as_str())
            .execute(self.pool())
            .await
            .map_err(db("clear password"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError> {
        let row: Option<(String, i64, i32, Option<i64>)> = sqlx::query_as(PASSWORD)
            .bind(user.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read password"))?;
        row.map(|(phc, set_us, failures, locked)| {
            password_row(phc, set_us, i64::from(failures), locked)
        })
        .transpose()
    }

    async fn record_password_failure(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Option<PasswordFailures>, StoreError> {
        // One UPDATE: the row lock serialises concurrent failures (READ COMMITTED re-reads the
        // newest row version), so every one of them is counted. The shift is capped well above
        // the 15-minute cap so that it cannot overflow.
        let row: Option<(i32, Option<i64>)> = sqlx::query_as(
            "UPDATE identity_user_passwords SET
                 failures = failures + 1,
                 locked_until_us = CASE WHEN failures + 1 >= $3
                     THEN $2 + LEAST($4::BIGINT, 1::BIGINT << LEAST(failures + 1 - $3, 20)) * 1000000
                     ELSE locked_until_us END
             WHERE user_id = $1
             RETURNING failures, locked_until_us",
        )
        .bind(user.as_str())
        .bind(now.as_micros())
        .bind(i32::try_from(LOCK_AFTER_FAILURES).unwrap_or(i32::MAX))
        .bind(MAX_LOCK_SECS)
        .fetch_optional(self.pool())
        .await
        .map_err(db("record password failure"))?;
        row.map(|(failures, locked)| password_failures(i64::from(failures), locked))
            .transpose()
    }

    async fn reset_password_failures(&self, user: &UserId) -> Result<(), StoreError> {
        sqlx::query(RESET_PASSWORD_FAILURES)
            .bind(user.as_str())
            .execute(self.pool())
            .await
            .map_err(db("reset password failures"))?;
        Ok(())
    }
}
