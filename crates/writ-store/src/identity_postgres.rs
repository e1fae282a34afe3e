//! [`IdentityStore`] on PostgreSQL. Multi-statement writes run in a transaction under a
//! transaction-level advisory lock on the row set they touch, so replicas cannot interleave them.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, Grant, GrantId, Usage, UserId};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, SealedCredential, VersionState};

use crate::StoreError;
use crate::identity::{
    AgentRecord, ApiKeyRecord, CredentialVersion, GrantFilter, IdentityStore, KeySubject,
    LOCK_AFTER_FAILURES, MAX_LOCK_SECS, PasswordFailures, PasswordRecord, StoredGrant, UserRecord,
    corrupt, decode_grant, encode_grant, opt_ts, password_failures, subject_from, subject_parts,
    to_ts, version_row,
};
use crate::postgres::PgStore;

fn db(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::db(op, e)
}

fn unique_or(op: &'static str, what: String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::AlreadyExists(what),
        _ => StoreError::db(op, e),
    }
}

async fn load_user<'e, E>(conn: E, row: PgRow) -> Result<UserRecord, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let op = "read user";
    let id: String = row.try_get(0).map_err(db(op))?;
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_name FROM identity_user_groups WHERE user_id = $1 ORDER BY group_name",
    )
    .bind(&id)
    .fetch_all(conn)
    .await
    .map_err(db(op))?;
    Ok(UserRecord {
        id: UserId::new(id).map_err(corrupt("user id"))?,
        display_name: row.try_get(1).map_err(db(op))?,
        admin: row.try_get(2).map_err(db(op))?,
        groups,
        created_at: to_ts(row.try_get(3).map_err(db(op))?, "user creation time")?,
    })
}

/// Takes `name` for a principal of `kind` in the namespace users and agents share.
async fn claim_name(
    tx: &mut sqlx::PgConnection,
    name: &str,
    kind: &'static str,
) -> Result<(), StoreError> {
    let op = "claim name";
    let taken = sqlx::query(
        "INSERT INTO identity_names (name, kind) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(kind)
    .execute(&mut *tx)
    .await
    .map_err(db(op))?
    .rows_affected()
        == 0;
    if taken {
        let holder: String = sqlx::query_scalar("SELECT kind FROM identity_names WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db(op))?;
        return Err(crate::identity::name_conflict(name, kind, &holder));
    }
    Ok(())
}

fn agent_from(row: &PgRow) -> Result<AgentRecord, StoreError> {
    let op = "read agent";
    Ok(AgentRecord {
        id: AgentId::new(row.try_get::<String, _>(0).map_err(db(op))?)
            .map_err(corrupt("agent id"))?,
        owner: UserId::new(row.try_get::<String, _>(1).map_err(db(op))?)
            .map_err(corrupt("agent owner"))?,
        public_key: row.try_get(2).map_err(db(op))?,
        created_at: to_ts(row.try_get(3).map_err(db(op))?, "agent creation time")?,
        disabled_at: opt_ts(row.try_get(4).map_err(db(op))?, "agent disabling time")?,
        key_generation: u64::try_from(row.try_get::<i64, _>(5).map_err(db(op))?)
            .map_err(|_| StoreError::Corrupt("agent key generation is negative".into()))?,
    })
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

const CREDENTIAL_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.vault.' || $1 || '/' || $2))";

#[async_trait]
impl IdentityStore for PgStore {
    async fn add_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let op = "add user";
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        claim_name(&mut tx, user.id.as_str(), "user").await?;
        sqlx::query("INSERT INTO identity_users (id, display_name, is_admin, created_us) VALUES ($1, $2, $3, $4)")
            .bind(user.id.as_str())
            .bind(&user.display_name)
            .bind(user.admin)
            .bind(user.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(unique_or(op, format!("user {}", user.id)))?;
        for g in &user.groups {
            sqlx::query(
                "INSERT INTO identity_user_groups (user_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(user.id.as_str())
            .bind(g)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        }
        tx.commit().await.map_err(db(op))
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, display_name, is_admin, created_us FROM identity_users WHERE id = $1",
        )
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
        sqlx::query(
            "INSERT INTO identity_agents (id, owner, public_key, created_us, disabled_us, key_generation)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
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
        sqlx::query(
            "SELECT id, owner, public_key, created_us, disabled_us, key_generation FROM identity_agents WHERE id = $1",
        )
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db("read agent"))?
            .map(|r| agent_from(&r))
            .transpose()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        sqlx::query(
            "SELECT id, owner, public_key, created_us, disabled_us, key_generation FROM identity_agents ORDER BY id",
        )
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
        let done = sqlx::query(
            "UPDATE identity_agents SET public_key = $2, key_generation = key_generation + 1
             WHERE id = $1",
        )
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
        let done = sqlx::query("UPDATE identity_agents SET disabled_us = $2 WHERE id = $1")
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
        sqlx::query(
            "INSERT INTO identity_api_keys (key_hash, key_id, subject_kind, subject_id, created_us, revoked_us)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
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
        let row = sqlx::query(
            "SELECT key_id, subject_kind, subject_id, created_us, revoked_us FROM identity_api_keys
             WHERE key_hash = $1 AND revoked_us IS NULL",
        )
        .bind(&key_hash[..])
        .fetch_optional(self.pool())
        .await
        .map_err(db(op))?;
        row.map(|r| {
            let kind: String = r.try_get(1).map_err(db(op))?;
            Ok(ApiKeyRecord {
                key_id: r.try_get(0).map_err(db(op))?,
                subject: subject_from(&kind, r.try_get(2).map_err(db(op))?)?,
                created_at: to_ts(r.try_get(3).map_err(db(op))?, "api key creation time")?,
                revoked_at: opt_ts(r.try_get(4).map_err(db(op))?, "api key revocation time")?,
            })
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
        let done = sqlx::query(
            "UPDATE identity_api_keys SET revoked_us = $3
             WHERE subject_kind = $1 AND subject_id = $2 AND revoked_us IS NULL",
        )
        .bind(kind)
        .bind(id)
        .bind(at.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        if kind == "agent" {
            sqlx::query(
                "UPDATE identity_agents SET key_generation = key_generation + 1 WHERE id = $1",
            )
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
        sqlx::query(
            "INSERT INTO identity_grants (id, user_id, agent_id, spec, created_by, created_us, expires_us,
                 revoked_us, max_uses, max_sum)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(g.id.as_str())
        .bind(g.spec.user.as_str())
        .bind(g.spec.agent.as_str())
        .bind(spec)
        .bind(g.created_by.as_str())
        .bind(g.created_at.as_micros())
        .bind(g.spec.expires_at.as_micros())
        .bind(g.revoked_at.map(Timestamp::as_micros))
        .bind(g.spec.max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX)))
        .bind(g.spec.sum_budget.as_ref().map(|b| b.max.micros()))
        .execute(self.pool())
        .await
        .map_err(unique_or("add grant", format!("grant {}", g.id)))?;
        Ok(())
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        sqlx::query(
            "SELECT spec, id, created_by, created_us, revoked_us, uses, sum_micros
             FROM identity_grants WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(db("read grant"))?
        .map(|r| grant_from(&r))
        .transpose()
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError> {
        sqlx::query(
            "SELECT spec, id, created_by, created_us, revoked_us, uses, sum_micros FROM identity_grants
             WHERE ($1::TEXT IS NULL OR user_id = $1) AND ($2::TEXT IS NULL OR agent_id = $2) ORDER BY id",
        )
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
        let done = sqlx::query(
            "UPDATE identity_grants SET revoked_us = $2 WHERE id = $1 AND revoked_us IS NULL",
        )
        .bind(id.as_str())
        .bind(at.as_micros())
        .execute(self.pool())
        .await
        .map_err(db(op))?;
        if done.rows_affected() == 0 {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM identity_grants WHERE id = $1")
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
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE identity_grants SET uses = uses + 1, sum_micros = sum_micros + $2
             WHERE id = $1 AND revoked_us IS NULL AND expires_us > $3
               AND (max_uses IS NULL OR uses < max_uses)
               AND (max_sum IS NULL OR sum_micros + $2 <= max_sum)
             RETURNING uses, sum_micros",
        )
        .bind(id.as_str())
        .bind(amount.micros())
        .bind(now.as_micros())
        .fetch_optional(self.pool())
        .await
        .map_err(db("consume grant"))?;
        Ok(row.map(|(uses, sum)| Usage {
            uses: u64::try_from(uses).unwrap_or(0),
            sum: Amount(sum),
        }))
    }

    async fn put_credential(
        &self,
        sealed: &SealedCredential,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "store credential";
        let r = &sealed.reference;
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        sqlx::query(CREDENTIAL_LOCK)
            .bind(r.name.as_str())
            .bind(r.scope.owner_key())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0)::BIGINT + 1 FROM vault_credentials WHERE name = $1 AND owner = $2",
        )
        .bind(r.name.as_str())
        .bind(r.scope.owner_key())
        .fetch_one(&mut *tx)
        .await
        .map_err(db(op))?;
        if next != i64::from(r.version) {
            return Err(StoreError::Conflict(format!(
                "credential {} was sealed as version {} but the next version is {next}; another writer stored one first, retry",
                r.name, r.version
            )));
        }
        sqlx::query("UPDATE vault_credentials SET state = 'previous' WHERE name = $1 AND owner = $2 AND state = 'current'")
            .bind(r.name.as_str())
            .bind(r.scope.owner_key())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        sqlx::query(
            "INSERT INTO vault_credentials (name, owner, version, state, master_key_id, wrapped_key, ciphertext, created_us)
             VALUES ($1, $2, $3, 'current', $4, $5, $6, $7)",
        )
        .bind(r.name.as_str())
        .bind(r.scope.owner_key())
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
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0)::BIGINT + 1 FROM vault_credentials WHERE name = $1 AND owner = $2",
        )
        .bind(name.as_str())
        .bind(scope.owner_key())
        .fetch_one(self.pool())
        .await
        .map_err(db("read credential versions"))?;
        u32::try_from(next).map_err(|_| StoreError::Corrupt(format!("credential version {next}")))
    }

    async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError> {
        let op = "list credentials";
        let rows = sqlx::query(
            "SELECT name, owner, version, state, master_key_id, created_us, retired_us FROM vault_credentials
             WHERE $1::TEXT IS NULL OR name = $1 ORDER BY name, owner, version",
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
        let row: Option<(String, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT master_key_id, wrapped_key, ciphertext FROM vault_credentials
             WHERE name = $1 AND owner = $2 AND version = $3 AND state <> 'retired'",
        )
        .bind(reference.name.as_str())
        .bind(reference.scope.owner_key())
        .bind(i64::from(reference.version))
        .fetch_optional(self.pool())
        .await
        .map_err(db("read credential"))?;
        match row {
            None => Ok(None),
            Some((master_key_id, Some(wrapped_key), Some(ciphertext))) => {
                Ok(Some(SealedCredential {
                    reference: reference.clone(),
                    master_key_id,
                    wrapped_key,
                    ciphertext,
                }))
            }
            Some(_) => Err(StoreError::Corrupt(format!(
                "credential {reference} has no sealed bytes"
            ))),
        }
    }

    async fn retire_credential(
        &self,
        reference: &CredentialRef,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "retire credential";
        let mut tx = self.pool().begin().await.map_err(db(op))?;
        sqlx::query(CREDENTIAL_LOCK)
            .bind(reference.name.as_str())
            .bind(reference.scope.owner_key())
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT version, state FROM vault_credentials WHERE name = $1 AND owner = $2",
        )
        .bind(reference.name.as_str())
        .bind(reference.scope.owner_key())
        .fetch_all(&mut *tx)
        .await
        .map_err(db(op))?;
        let versions = rows
            .into_iter()
            .map(|(v, s)| {
                Ok((
                    u32::try_from(v)
                        .map_err(|_| StoreError::Corrupt(format!("credential version {v}")))?,
                    VersionState::parse(&s)
                        .ok_or_else(|| StoreError::Corrupt(format!("credential state {s:?}")))?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        writ_vault::check_retire(&reference.name, &versions, reference.version)
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        sqlx::query(
            "UPDATE vault_credentials SET state = 'retired', retired_us = $4, wrapped_key = NULL, ciphertext = NULL
             WHERE name = $1 AND owner = $2 AND version = $3",
        )
        .bind(reference.name.as_str())
        .bind(reference.scope.owner_key())
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
        sqlx::query("DELETE FROM identity_assertion_jtis WHERE expires_us <= $1")
            .bind(now.as_micros())
            .execute(self.pool())
            .await
            .map_err(db(op))?;
        let done = sqlx::query(
            "INSERT INTO identity_assertion_jtis (agent, jti, expires_us) VALUES ($1, $2, $3)
             ON CONFLICT (agent, jti) DO NOTHING",
        )
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
        sqlx::query(
            "INSERT INTO identity_user_passwords (user_id, phc, set_us, failures, locked_until_us)
             VALUES ($1, $2, $3, 0, NULL)
             ON CONFLICT (user_id) DO UPDATE SET
                 phc = EXCLUDED.phc, set_us = EXCLUDED.set_us, failures = 0, locked_until_us = NULL",
        )
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
        let done = sqlx::query("DELETE FROM identity_user_passwords WHERE user_id = $1")
            .bind(user.as_str())
            .execute(self.pool())
            .await
            .map_err(db("clear password"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError> {
        let row: Option<(String, i64, i32, Option<i64>)> = sqlx::query_as(
            "SELECT phc, set_us, failures, locked_until_us FROM identity_user_passwords
             WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(db("read password"))?;
        row.map(|(phc, set_us, failures, locked)| {
            let f = password_failures(i64::from(failures), locked)?;
            Ok(PasswordRecord {
                phc,
                set_at: to_ts(set_us, "password set time")?,
                failures: f.failures,
                locked_until: f.locked_until,
            })
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
        sqlx::query(
            "UPDATE identity_user_passwords SET failures = 0, locked_until_us = NULL
             WHERE user_id = $1 AND (failures <> 0 OR locked_until_us IS NOT NULL)",
        )
        .bind(user.as_str())
        .execute(self.pool())
        .await
        .map_err(db("reset password failures"))?;
        Ok(())
    }
}
