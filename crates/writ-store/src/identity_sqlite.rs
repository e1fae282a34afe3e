//! [`IdentityStore`] on SQLite. Writes run on pooled connections (WAL lets them sit beside the
//! audit writer); multi-statement writes take `BEGIN IMMEDIATE` so they never deadlock upgrading
//! a read lock.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
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
use crate::sqlite::SqliteStore;

fn db(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::db(op, e)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn immediate(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn load_user(c: &Connection, id: &str) -> Result<Option<UserRecord>, StoreError> {
    let op = "read user";
    let row = c
        .query_row(
            "SELECT id, display_name, is_admin, created_us FROM identity_users WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()
        .map_err(db(op))?;
    let Some((id, display_name, admin, created_us)) = row else {
        return Ok(None);
    };
    let mut stmt = c
        .prepare_cached(
            "SELECT group_name FROM identity_user_groups WHERE user_id = ?1 ORDER BY group_name",
        )
        .map_err(db(op))?;
    let groups = stmt
        .query_map(params![id], |r| r.get::<_, String>(0))
        .map_err(db(op))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db(op))?;
    Ok(Some(UserRecord {
        id: UserId::new(id).map_err(corrupt("user id"))?,
        display_name,
        admin,
        groups,
        created_at: to_ts(created_us, "user creation time")?,
    }))
}

/// Takes `name` for a principal of `kind` in the namespace users and agents share.
fn claim_name(tx: &Connection, name: &str, kind: &'static str) -> Result<(), StoreError> {
    let op = "claim name";
    match tx.execute(
        "INSERT INTO identity_names (name, kind) VALUES (?1, ?2)",
        params![name, kind],
    ) {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            let holder: String = tx
                .query_row(
                    "SELECT kind FROM identity_names WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .map_err(db(op))?;
            Err(crate::identity::name_conflict(name, kind, &holder))
        }
        Err(e) => Err(StoreError::db(op, e)),
    }
}

const AGENT_COLUMNS: &str = "id, owner, public_key, created_us, disabled_us, key_generation";

type AgentRow = (String, String, Option<String>, i64, Option<i64>, i64);

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn agent_from(row: AgentRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: AgentId::new(row.0).map_err(corrupt("agent id"))?,
        owner: UserId::new(row.1).map_err(corrupt("agent owner"))?,
        public_key: row.2,
        created_at: to_ts(row.3, "agent creation time")?,
        disabled_at: opt_ts(row.4, "agent disabling time")?,
        key_generation: u64::try_from(row.5)
            .map_err(|_| StoreError::Corrupt("agent key generation is negative".into()))?,
    })
}

const GRANT_COLUMNS: &str = "spec, id, created_by, created_us, revoked_us, uses, sum_micros";

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

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn add_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.read("add user", move |c| {
            let op = "add user";
            let tx = immediate(c).map_err(db(op))?;
            claim_name(&tx, user.id.as_str(), "user")?;
            tx.execute(
                "INSERT INTO identity_users (id, display_name, is_admin, created_us) VALUES (?1, ?2, ?3, ?4)",
                params![user.id.as_str(), user.display_name, user.admin, user.created_at.as_micros()],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!("user {}", user.id))
                } else {
                    StoreError::db(op, e)
                }
            })?;
            for g in &user.groups {
                tx.execute(
                    "INSERT OR IGNORE INTO identity_user_groups (user_id, group_name) VALUES (?1, ?2)",
                    params![user.id.as_str(), g],
                )
                .map_err(db(op))?;
            }
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let id = id.to_string();
        self.read("read user", move |c| load_user(c, &id)).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read("list users", |c| {
            let op = "list users";
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
        let agent = agent.clone();
        self.read("add agent", move |c| {
            let op = "add agent";
            let tx = immediate(c).map_err(db(op))?;
            if load_user(&tx, agent.owner.as_str())?.is_none() {
                return Err(StoreError::NotFound(format!("user {} (the agent's owner)", agent.owner)));
            }
            claim_name(&tx, agent.id.as_str(), "agent")?;
            tx.execute(
                "INSERT INTO identity_agents (id, owner, public_key, created_us, disabled_us, key_generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    agent.id.as_str(),
                    agent.owner.as_str(),
                    agent.public_key,
                    agent.created_at.as_micros(),
                    agent.disabled_at.map(Timestamp::as_micros),
                    i64::try_from(agent.key_generation).unwrap_or(i64::MAX),
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!("agent {}", agent.id))
                } else {
                    StoreError::db(op, e)
                }
            })?;
            tx.commit().map_err(db(op))
        })
        .await
    }

    async fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let id = id.to_string();
        self.read("read agent", move |c| {
            c.query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM identity_agents WHERE id = ?1"),
                params![id],
                agent_row,
            )
            .optional()
            .map_err(db("read agent"))?
            .map(agent_from)
            .transpose()
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read("list agents", |c| {
            let op = "list agents";
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {AGENT_COLUMNS} FROM identity_agents ORDER BY id"
                ))
                .map_err(db(op))?;
            let rows = stmt.query_map([], agent_row).map_err(db(op))?;
            rows.map(|r| agent_from(r.map_err(db(op))?)).collect()
        })
        .await
    }

    async fn set_agent_public_key(
        &self,
        id: &AgentId,
        jwk: Option<&str>,
    ) -> Result<(), StoreError> {
        let (id, jwk) = (id.to_string(), jwk.map(str::to_owned));
        self.read("set agent key", move |c| {
            let n = c
                .execute(
                    "UPDATE identity_agents SET public_key = ?2, key_generation = key_generation + 1
                     WHERE id = ?1",
                    params![id, jwk],
                )
                .map_err(db("set agent key"))?;
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
        let id = id.to_string();
        self.read("disable agent", move |c| {
            let n = c
                .execute(
                    "UPDATE identity_agents SET disabled_us = ?2 WHERE id = ?1",
                    params![id, at.map(Timestamp::as_micros)],
                )
                .map_err(db("disable agent"))?;
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
        let (hash, record) = (*key_hash, record.clone());
        self.read("add api key", move |c| {
            let (kind, id) = subject_parts(&record.subject);
            c.execute(
                "INSERT INTO identity_api_keys (key_hash, key_id, subject_kind, subject_id, created_us, revoked_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&hash[..], record.key_id, kind, id, record.created_at.as_micros(), record.revoked_at.map(Timestamp::as_micros)],
            )
            .map_err(db("add api key"))?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = *key_hash;
        self.read("read api key", move |c| {
            let row = c
                .query_row(
                    "SELECT key_id, subject_kind, subject_id, created_us, revoked_us FROM identity_api_keys
                     WHERE key_hash = ?1 AND revoked_us IS NULL",
                    params![&hash[..]],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, Option<i64>>(4)?)),
                )
                .optional()
                .map_err(db("read api key"))?;
            row.map(|(key_id, kind, id, created, revoked)| {
                Ok(ApiKeyRecord {
                    key_id,
                    subject: subject_from(&kind, id)?,
                    created_at: to_ts(created, "api key creation time")?,
                    revoked_at: opt_ts(revoked, "api key revocation time")?,
                })
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
        let subject = subject.clone();
        self.read("revoke api keys", move |c| {
            let op = "revoke api keys";
            let (kind, id) = subject_parts(&subject);
            let tx = immediate(c).map_err(db(op))?;
            let n = tx
                .execute(
                    "UPDATE identity_api_keys SET revoked_us = ?3
                     WHERE subject_kind = ?1 AND subject_id = ?2 AND revoked_us IS NULL",
                    params![kind, id, at.as_micros()],
                )
                .map_err(db(op))?;
            if kind == "agent" {
                tx.execute(
                    "UPDATE identity_agents SET key_generation = key_generation + 1 WHERE id = ?1",
                    params![id],
                )
                .map_err(db(op))?;
            }
            tx.commit().map_err(db(op))?;
            Ok(n as u64)
        })
        .await
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let spec = encode_grant(grant)?;
        let g = grant.clone();
        self.read("add grant", move |c| {
            c.execute(
                "INSERT INTO identity_grants (id, user_id, agent_id, spec, created_by, created_us, expires_us,
                     revoked_us, max_uses, max_sum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    g.id.as_str(),
                    g.spec.user.as_str(),
                    g.spec.agent.as_str(),
                    spec,
                    g.created_by.as_str(),
                    g.created_at.as_micros(),
                    g.spec.expires_at.as_micros(),
                    g.revoked_at.map(Timestamp::as_micros),
                    g.spec.max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
                    g.spec.sum_budget.as_ref().map(|b| b.max.micros()),
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!("grant {}", g.id))
                } else {
                    StoreError::db("add grant", e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        let id = id.to_string();
        self.read("read grant", move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {GRANT_COLUMNS} FROM identity_grants WHERE id = ?1"),
                    params![id],
                    grant_from,
                )
                .optional()
                .map_err(db("read grant"))?;
            row.map(|(s, i, b, cu, ru, u, m)| decode_grant(&s, i, b, cu, ru, u, m))
                .transpose()
        })
        .await
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError> {
        let (user, agent) = (
            filter.user.as_ref().map(|u| u.to_string()),
            filter.agent.as_ref().map(|a| a.to_string()),
        );
        self.read("list grants", move |c| {
            let op = "list grants";
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {GRANT_COLUMNS} FROM identity_grants
                     WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR agent_id = ?2) ORDER BY id"
                ))
                .map_err(db(op))?;
            let rows = stmt.query_map(params![user, agent], grant_from).map_err(db(op))?;
            rows.map(|r| {
                let (s, i, b, cu, ru, u, m) = r.map_err(db(op))?;
                decode_grant(&s, i, b, cu, ru, u, m)
            })
            .collect()
        })
        .await
    }

    async fn revoke_grant(&self, id: &GrantId, at: Timestamp) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.read("revoke grant", move |c| {
            let op = "revoke grant";
            let n = c
                .execute(
                    "UPDATE identity_grants SET revoked_us = ?2 WHERE id = ?1 AND revoked_us IS NULL",
                    params![id, at.as_micros()],
                )
                .map_err(db(op))?;
            if n == 0 {
                let exists: Option<i64> = c
                    .query_row("SELECT 1 FROM identity_grants WHERE id = ?1", params![id], |r| r.get(0))
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
        let id = id.to_string();
        self.read("consume grant", move |c| {
            // One statement: SQLite serialises writers, so the conditions and the increment are
            // evaluated and applied atomically.
            let row = c
                .query_row(
                    "UPDATE identity_grants SET uses = uses + 1, sum_micros = sum_micros + ?2
                     WHERE id = ?1 AND revoked_us IS NULL AND expires_us > ?3
                       AND (max_uses IS NULL OR uses < max_uses)
                       AND (max_sum IS NULL OR sum_micros + ?2 <= max_sum)
                     RETURNING uses, sum_micros",
                    params![id, amount.micros(), now.as_micros()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db("consume grant"))?;
            Ok(row.map(|(uses, sum)| Usage {
                uses: u64::try_from(uses).unwrap_or(0),
                sum: Amount(sum),
            }))
        })
        .await
    }

    async fn put_credential(
        &self,
        sealed: &SealedCredential,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sealed = sealed.clone();
        self.read("store credential", move |c| {
            let op = "store credential";
            let r = &sealed.reference;
            let tx = immediate(c).map_err(db(op))?;
            let next: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM vault_credentials WHERE name = ?1 AND owner = ?2",
                    params![r.name.as_str(), r.scope.owner_key()],
                    |row| row.get(0),
                )
                .map_err(db(op))?;
            if next != i64::from(r.version) {
                return Err(StoreError::Conflict(format!(
                    "credential {} was sealed as version {} but the next version is {next}; another writer stored one first, retry",
                    r.name, r.version
                )));
            }
            tx.execute(
                "UPDATE vault_credentials SET state = 'previous' WHERE name = ?1 AND owner = ?2 AND state = 'current'",
                params![r.name.as_str(), r.scope.owner_key()],
            )
            .map_err(db(op))?;
            tx.execute(
                "INSERT INTO vault_credentials (name, owner, version, state, master_key_id, wrapped_key, ciphertext, created_us)
                 VALUES (?1, ?2, ?3, 'current', ?4, ?5, ?6, ?7)",
                params![r.name.as_str(), r.scope.owner_key(), next, sealed.master_key_id, sealed.wrapped_key, sealed.ciphertext, now.as_micros()],
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
        let (name, owner) = (name.to_string(), scope.owner_key().to_owned());
        self.read("read credential versions", move |c| {
            let next: i64 = c
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM vault_credentials WHERE name = ?1 AND owner = ?2",
                    params![name, owner],
                    |r| r.get(0),
                )
                .map_err(db("read credential versions"))?;
            u32::try_from(next).map_err(|_| StoreError::Corrupt(format!("credential version {next}")))
        })
        .await
    }

    async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError> {
        let name = name.map(|n| n.to_string());
        self.read("list credentials", move |c| {
            let op = "list credentials";
            let mut stmt = c
                .prepare(
                    "SELECT name, owner, version, state, master_key_id, created_us, retired_us FROM vault_credentials
                     WHERE ?1 IS NULL OR name = ?1 ORDER BY name, owner, version",
                )
                .map_err(db(op))?;
            let rows = stmt
                .query_map(params![name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
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
        let reference = reference.clone();
        self.read("read credential", move |c| {
            let row = c
                .query_row(
                    "SELECT master_key_id, wrapped_key, ciphertext FROM vault_credentials
                     WHERE name = ?1 AND owner = ?2 AND version = ?3 AND state <> 'retired'",
                    params![
                        reference.name.as_str(),
                        reference.scope.owner_key(),
                        i64::from(reference.version)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<Vec<u8>>>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db("read credential"))?;
            match row {
                None => Ok(None),
                Some((master_key_id, Some(wrapped_key), Some(ciphertext))) => {
                    Ok(Some(SealedCredential {
                        reference,
                        master_key_id,
                        wrapped_key,
                        ciphertext,
                    }))
                }
                Some(_) => Err(StoreError::Corrupt(format!(
                    "credential {reference} has no sealed bytes"
                ))),
            }
        })
        .await
    }

    async fn retire_credential(
        &self,
        reference: &CredentialRef,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let reference = reference.clone();
        self.read("retire credential", move |c| {
            let op = "retire credential";
            let tx = immediate(c).map_err(db(op))?;
            let versions = {
                let mut stmt = tx
                    .prepare("SELECT version, state FROM vault_credentials WHERE name = ?1 AND owner = ?2")
                    .map_err(db(op))?;
                let rows = stmt
                    .query_map(params![reference.name.as_str(), reference.scope.owner_key()], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(db(op))?;
                rows.map(|r| {
                    let (v, s) = r.map_err(db(op))?;
                    Ok((
                        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("credential version {v}")))?,
                        VersionState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("credential state {s:?}")))?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?
            };
            writ_vault::check_retire(&reference.name, &versions, reference.version)
                .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
            tx.execute(
                "UPDATE vault_credentials SET state = 'retired', retired_us = ?4, wrapped_key = NULL, ciphertext = NULL
                 WHERE name = ?1 AND owner = ?2 AND version = ?3",
                params![reference.name.as_str(), reference.scope.owner_key(), i64::from(reference.version), now.as_micros()],
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
        let (agent, jti) = (agent.to_string(), jti.to_owned());
        self.read("record assertion jti", move |c| {
            let op = "record assertion jti";
            c.execute(
                "DELETE FROM identity_assertion_jtis WHERE expires_us <= ?1",
                params![now.as_micros()],
            )
            .map_err(db(op))?;
            let n = c
                .execute(
                    "INSERT INTO identity_assertion_jtis (agent, jti, expires_us) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent, jti) DO NOTHING",
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
        let (user, phc) = (user.to_string(), phc.to_owned());
        self.read("set password", move |c| {
            let op = "set password";
            if load_user(c, &user)?.is_none() {
                return Err(StoreError::NotFound(format!("user {user}")));
            }
            c.execute(
                "INSERT INTO identity_user_passwords (user_id, phc, set_us, failures, locked_until_us)
                 VALUES (?1, ?2, ?3, 0, NULL)
                 ON CONFLICT (user_id) DO UPDATE SET
                     phc = excluded.phc, set_us = excluded.set_us, failures = 0, locked_until_us = NULL",
                params![user, phc, now.as_micros()],
            )
            .map_err(db(op))?;
            Ok(())
        })
        .await
    }

    async fn clear_password(&self, user: &UserId) -> Result<bool, StoreError> {
        let user = user.to_string();
        self.read("clear password", move |c| {
            let n = c
                .execute(
                    "DELETE FROM identity_user_passwords WHERE user_id = ?1",
                    params![user],
                )
                .map_err(db("clear password"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError> {
        let user = user.to_string();
        self.read("read password", move |c| {
            let row = c
                .query_row(
                    "SELECT phc, set_us, failures, locked_until_us FROM identity_user_passwords
                     WHERE user_id = ?1",
                    params![user],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(db("read password"))?;
            row.map(|(phc, set_us, failures, locked)| {
                let f = password_failures(failures, locked)?;
                Ok(PasswordRecord {
                    phc,
                    set_at: to_ts(set_us, "password set time")?,
                    failures: f.failures,
                    locked_until: f.locked_until,
                })
            })
            .transpose()
        })
        .await
    }

    async fn record_password_failure(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Option<PasswordFailures>, StoreError> {
        let user = user.to_string();
        self.read("record password failure", move |c| {
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
                .map_err(db("record password failure"))?;
            row.map(|(failures, locked)| password_failures(failures, locked))
                .transpose()
        })
        .await
    }

    async fn reset_password_failures(&self, user: &UserId) -> Result<(), StoreError> {
        let user = user.to_string();
        self.read("reset password failures", move |c| {
            c.execute(
                "UPDATE identity_user_passwords SET failures = 0, locked_until_us = NULL
                 WHERE user_id = ?1 AND (failures <> 0 OR locked_until_us IS NOT NULL)",
                params![user],
            )
            .map_err(db("reset password failures"))?;
            Ok(())
        })
        .await
    }
}
