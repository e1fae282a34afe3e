//! [`IdentityStore`] on SQLite. Writes run on pooled connections (WAL lets them sit beside the
//! audit writer); multi-statement writes take `BEGIN IMMEDIATE` so they never deadlock upgrading
//! a read lock.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use writ_core::Timestamp;
use writ_identity::{AgentId, Amount, Grant, GrantId, Usage, UserId};
use writ_vault::{CredentialName, CredentialRef, CredentialScope, SealedCredential};

use super::{SqliteStore, db, immediate, sql};
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

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// `what` already exists if the insert broke a unique key; otherwise the error of `op`.
fn unique_or(op: &'static str, what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists(what)
        } else {
            StoreError::db(op, e)
        }
    }
}

fn load_user(c: &Connection, id: &str) -> Result<Option<UserRecord>, StoreError> {
    let op = "read user";
    let row = c
        .query_row(&sql(USER_BY_ID), params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(db(op))?;
    let Some((id, display_name, admin, created_us)) = row else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(&sql(USER_GROUPS)).map_err(db(op))?;
    let groups = stmt
        .query_map(params![id], |r| r.get::<_, String>(0))
        .map_err(db(op))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(op))?;
    user_row(id, display_name, admin, created_us, groups).map(Some)
}

/// Takes `name` for a principal of `kind` in the namespace users and agents share.
fn claim_name(tx: &Connection, name: &str, kind: &'static str) -> Result<(), StoreError> {
    let op = "claim name";
    let claimed = tx
        .execute(&sql(CLAIM_NAME), params![name, kind])
        .map_err(db(op))?;
    if claimed == 0 {
        let holder: String = tx
            .query_row(&sql(NAME_HOLDER), params![name], |r| r.get(0))
            .map_err(db(op))?;
        return Err(name_conflict(name, kind, &holder));
    }
    Ok(())
}

fn raw_agent(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAgent> {
    Ok(RawAgent {
        id: r.get(0)?,
        owner: r.get(1)?,
        public_key: r.get(2)?,
        created_us: r.get(3)?,
        disabled_us: r.get(4)?,
        key_generation: r.get(5)?,
    })
}

/// spec, id, created_by, created_us, revoked_us, uses, sum_micros.
type GrantRow = (String, String, String, i64, Option<i64>, i64, i64);

fn grant_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode(
    (spec, id, by, created, revoked, uses, sum): GrantRow,
) -> Result<StoredGrant, StoreError> {
    decode_grant(&spec, id, by, created, revoked, uses, sum)
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn add_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let op = "add user";
        let user = user.clone();
        self.with_conn(op, move |c| {
            let tx = immediate(c).map_err(db(op))?;
            claim_name(&tx, user.id.as_str(), "user")?;
            tx.execute(
                &sql(ADD_USER),
                params![
                    user.id.as_str(),
                    user.display_name,
                    user.admin,
                    user.created_at.as_micros()
                ],
            )
            .map_err(unique_or(op, format!("user {}", user.id)))?;
            for g in &user.groups {
                tx.execute(&sql(ADD_USER_GROUP), params![user.id.as_str(), g])
                    .map_err(db(op))?;
            }
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let id = id.to_string();
        self.with_conn("read user", move |c| load_user(c, &id))
            .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let op = "list users";
        self.with_conn(op, move |c| {
            let mut stmt = c
                .prepare("SELECT id FROM identity_users ORDER BY id")
                .map_err(db(op))?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db(op))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db(op))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(load_user(c, &id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn add_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let op = "add agent";
        let agent = agent.clone();
        self.with_conn(op, move |c| {
            let tx = immediate(c).map_err(db(op))?;
            if load_user(&tx, agent.owner.as_str())?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "user {} (the agent's owner)",
                    agent.owner
                )));
            }
            claim_name(&tx, agent.id.as_str(), "agent")?;
            tx.execute(
                &sql(ADD_AGENT),
                params![
                    agent.id.as_str(),
                    agent.owner.as_str(),
                    agent.public_key,
                    agent.created_at.as_micros(),
                    agent.disabled_at.map(Timestamp::as_micros),
                    i64::try_from(agent.key_generation).unwrap_or(i64::MAX),
                ],
            )
            .map_err(unique_or(op, format!("agent {}", agent.id)))?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let op = "read agent";
        let id = id.to_string();
        self.with_conn(op, move |c| {
            c.query_row(&sql(AGENT_BY_ID), params![id], raw_agent)
                .optional()
                .map_err(db(op))?
                .map(RawAgent::decode)
                .transpose()
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let op = "list agents";
        self.with_conn(op, move |c| {
            let mut stmt = c.prepare(AGENTS).map_err(db(op))?;
            let rows = stmt.query_map([], raw_agent).map_err(db(op))?;
            rows.map(|r| r.map_err(db(op))?.decode()).collect()
        })
        .await
    }

    async fn set_agent_public_key(
        &self,
        id: &AgentId,
        jwk: Option<&str>,
    ) -> Result<(), StoreError> {
        let op = "set agent key";
        let (id, jwk) = (id.to_string(), jwk.map(str::to_owned));
        self.with_conn(op, move |c| {
            let n = c
                .execute(&sql(SET_AGENT_KEY), params![id, jwk])
                .map_err(db(op))?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("agent {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn set_agent_disabled(
        &self,
        id: &AgentId,
        at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let op = "disable agent";
        let id = id.to_string();
        self.with_conn(op, move |c| {
            let n = c
                .execute(
                    &sql(SET_AGENT_DISABLED),
                    params![id, at.map(Timestamp::as_micros)],
                )
                .map_err(db(op))?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("agent {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn add_api_key(
        &self,
        key_hash: &[u8; 32],
        record: &ApiKeyRecord,
    ) -> Result<(), StoreError> {
        let op = "add api key";
        let (hash, record) = (*key_hash, record.clone());
        self.with_conn(op, move |c| {
            let (kind, id) = subject_parts(&record.subject);
            c.execute(
                &sql(ADD_API_KEY),
                params![
                    &hash[..],
                    record.key_id,
                    kind,
                    id,
                    record.created_at.as_micros(),
                    record.revoked_at.map(Timestamp::as_micros)
                ],
            )
            .map_err(db(op))?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let op = "read api key";
        let hash = *key_hash;
        self.with_conn(op, move |c| {
            let row = c
                .query_row(&sql(LIVE_API_KEY), params![&hash[..]], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })
                .optional()
                .map_err(db(op))?;
            row.map(|(key_id, kind, id, created, revoked)| {
                api_key_row(key_id, &kind, id, created, revoked)
            })
            .transpose()
        })
        .await
    }

    async fn revoke_api_keys(
        &self,
        subject: &KeySubject,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let op = "revoke api keys";
        let subject = subject.clone();
        self.with_conn(op, move |c| {
            let (kind, id) = subject_parts(&subject);
            let tx = immediate(c).map_err(db(op))?;
            let n = tx
                .execute(&sql(REVOKE_API_KEYS), params![kind, id, at.as_micros()])
                .map_err(db(op))?;
            if kind == "agent" {
                tx.execute(&sql(NEXT_KEY_GENERATION), params![id])
                    .map_err(db(op))?;
            }
            tx.commit().map_err(db(op))?;
            Ok(n as u64)
        })
        .await
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let op = "add grant";
        let spec = encode_grant(grant)?;
        let g = grant.clone();
        self.with_conn(op, move |c| {
            c.execute(
                &sql(ADD_GRANT),
                params![
                    g.id.as_str(),
                    g.spec.user.as_str(),
                    g.spec.agent.as_str(),
                    spec,
                    g.created_by.as_str(),
                    g.created_at.as_micros(),
                    g.spec.expires_at.as_micros(),
                    g.revoked_at.map(Timestamp::as_micros),
                    g.spec
                        .max_uses
                        .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
                    g.spec.sum_budget.as_ref().map(|b| b.max.micros()),
                ],
            )
            .map_err(unique_or(op, format!("grant {}", g.id)))?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        let op = "read grant";
        let id = id.to_string();
        self.with_conn(op, move |c| {
            c.query_row(&sql(GRANT_BY_ID), params![id], grant_from)
                .optional()
                .map_err(db(op))?
                .map(decode)
                .transpose()
        })
        .await
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError> {
        let op = "list grants";
        let (user, agent) = (
            filter.user.as_ref().map(|u| u.to_string()),
            filter.agent.as_ref().map(|a| a.to_string()),
        );
        self.with_conn(op, move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {GRANT_COLUMNS} FROM identity_grants
                     WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR agent_id = ?2) ORDER BY id"
                ))
                .map_err(db(op))?;
            let rows = stmt
                .query_map(params![user, agent], grant_from)
                .map_err(db(op))?;
            rows.map(|r| decode(r.map_err(db(op))?)).collect()
        })
        .await
    }

    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool, StoreError> {
        let op = "revoke grant";
        let id = id.to_string();
        self.with_conn(op, move |c| {
            let n = c
                .execute(&sql(REVOKE_GRANT), params![id, at.as_micros()])
                .map_err(db(op))?;
            if n == 0 {
                let exists: Option<i64> = c
                    .query_row(&sql(GRANT_EXISTS), params![id], |r| r.get(0))
                    .optional()
                    .map_err(db(op))?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("grant {id}")));
                }
            }
            Ok(n == 1)
        })
        .await
    }

    async fn consume_grant(
        &self,
        id: &GrantId,
        amount: Amount,
        now: Timestamp,
    ) -> Result<Option<Usage>, StoreError> {
        let op = "consume grant";
        let id = id.to_string();
        self.with_conn(op, move |c| {
            // One statement: SQLite serialises writers, so the conditions and the increment are
            // evaluated and applied atomically.
            let row = c
                .query_row(
                    &sql(CONSUME_GRANT),
                    params![id, amount.micros(), now.as_micros()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db(op))?;
            Ok(row.map(|(uses, sum)| usage_row(uses, sum)))
        })
        .await
    }

    async fn put_credential(
        &self,
        sealed: &SealedCredential,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "store credential";
        let sealed = sealed.clone();
        self.with_conn(op, move |c| {
            let r = &sealed.reference;
            let (name, owner) = (r.name.as_str(), r.scope.owner_key());
            let tx = immediate(c).map_err(db(op))?;
            let next = next_version(&tx, name, owner).map_err(db(op))?;
            if next != i64::from(r.version) {
                return Err(version_taken(r, next));
            }
            tx.execute(&sql(DEMOTE_CURRENT_CREDENTIAL), params![name, owner])
                .map_err(db(op))?;
            tx.execute(
                &sql(ADD_CREDENTIAL),
                params![
                    name,
                    owner,
                    next,
                    sealed.master_key_id,
                    sealed.wrapped_key,
                    sealed.ciphertext,
                    now.as_micros()
                ],
            )
            .map_err(db(op))?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn next_credential_version(
        &self,
        name: &CredentialName,
        scope: &CredentialScope,
    ) -> Result<u32, StoreError> {
        let op = "read credential versions";
        let (name, owner) = (name.to_string(), scope.owner_key().to_owned());
        self.with_conn(op, move |c| {
            version_number(next_version(c, &name, &owner).map_err(db(op))?)
        })
        .await
    }

    async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError> {
        let op = "list credentials";
        let name = name.map(|n| n.to_string());
        self.with_conn(op, move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT name, owner, version, state, master_key_id, created_us, retired_us
                     FROM vault_credentials WHERE ?1 IS NULL OR name = ?1
                     ORDER BY name, owner, version",
                )
                .map_err(db(op))?;
            let rows = stmt
                .query_map(params![name], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(db(op))?;
            rows.map(|r| {
                let (n, o, v, s, k, cu, ru) = r.map_err(db(op))?;
                version_row(n, o, v, s, k, cu, ru)
            })
            .collect()
        })
        .await
    }

    async fn sealed_credential(
        &self,
        reference: &CredentialRef,
    ) -> Result<Option<SealedCredential>, StoreError> {
        let op = "read credential";
        let reference = reference.clone();
        self.with_conn(op, move |c| {
            let row = c
                .query_row(
                    &sql(SEALED_CREDENTIAL),
                    params![
                        reference.name.as_str(),
                        reference.scope.owner_key(),
                        i64::from(reference.version)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db(op))?;
            sealed_row(&reference, row)
        })
        .await
    }

    async fn retire_credential(
        &self,
        reference: &CredentialRef,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "retire credential";
        let reference = reference.clone();
        self.with_conn(op, move |c| {
            let (name, owner) = (reference.name.as_str(), reference.scope.owner_key());
            let tx = immediate(c).map_err(db(op))?;
            let rows = tx
                .prepare(&sql(CREDENTIAL_STATES))
                .map_err(db(op))?
                .query_map(params![name, owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db(op))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db(op))?;
            check_retire(&reference, rows)?;
            tx.execute(
                &sql(RETIRE_CREDENTIAL),
                params![name, owner, i64::from(reference.version), now.as_micros()],
            )
            .map_err(db(op))?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn record_assertion_jti(
        &self,
        agent: &AgentId,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let op = "record assertion jti";
        let (agent, jti) = (agent.to_string(), jti.to_owned());
        self.with_conn(op, move |c| {
            c.execute(&sql(PRUNE_ASSERTION_JTIS), params![now.as_micros()])
                .map_err(db(op))?;
            let n = c
                .execute(
                    &sql(RECORD_ASSERTION_JTI),
                    params![agent, jti, expires_at.as_micros()],
                )
                .map_err(db(op))?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_password(
        &self,
        user: &UserId,
        phc: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let op = "set password";
        let (user, phc) = (user.to_string(), phc.to_owned());
        self.with_conn(op, move |c| {
            if load_user(c, &user)?.is_none() {
                return Err(StoreError::NotFound(format!("user {user}")));
            }
            c.execute(&sql(SET_PASSWORD), params![user, phc, now.as_micros()])
                .map_err(db(op))?;
            Ok(())
        })
        .await
    }

    async fn clear_password(&self, user: &UserId) -> Result<bool, StoreError> {
        let op = "clear password";
        let user = user.to_string();
        self.with_conn(op, move |c| {
            let n = c
                .execute(&sql(CLEAR_PASSWORD), params![user])
                .map_err(db(op))?;
            Ok(n == 1)
        })
        .await
    }

    async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError> {
        let op = "read password";
        let user = user.to_string();
        self.with_conn(op, move |c| {
            let row = c
                .query_row(&sql(PASSWORD), params![user], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(db(op))?;
            row.map(|(phc, set_us, failures, locked)| password_row(phc, set_us, failures, locked))
                .transpose()
        })
        .await
    }

    async fn record_password_failure(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Option<PasswordFailures>, StoreError> {
        let op = "record password failure";
        let user = user.to_string();
        self.with_conn(op, move |c| {
            // One statement, so SQLite applies the count and the lock it earns atomically. The
            // shift is capped well above the 15-minute cap so that it cannot overflow.
            let row = c
                .query_row(
                    "UPDATE identity_user_passwords SET
                         failures = failures + 1,
                         locked_until_us = CASE WHEN failures + 1 >= ?3
                             THEN ?2 + MIN(?4, 1 << MIN(failures + 1 - ?3, 20)) * 1000000
                             ELSE locked_until_us END
                     WHERE user_id = ?1
                     RETURNING failures, locked_until_us",
                    params![user, now.as_micros(), LOCK_AFTER_FAILURES, MAX_LOCK_SECS],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
                )
                .optional()
                .map_err(db(op))?;
            row.map(|(failures, locked)| password_failures(failures, locked))
                .transpose()
        })
        .await
    }

    async fn reset_password_failures(&self, user: &UserId) -> Result<(), StoreError> {
        let op = "reset password failures";
        let user = user.to_string();
        self.with_conn(op, move |c| {
            c.execute(&sql(RESET_PASSWORD_FAILURES), params![user])
                .map_err(db(op))?;
            Ok(())
        })
        .await
    }
}

/// The version number the next put of credential (`name`, `owner`) gets.
fn next_version(c: &Connection, name: &str, owner: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM vault_credentials WHERE name = ?1 AND owner = ?2",
        params![name, owner],
        |r| r.get(0),
    )
}
