//! What a face may read of the store, and nothing it may write.
//!
//! `Gateway` keeps its database private: an action's state, the log and the identities change
//! only through the pipeline, the admin service and `auth`, each of which records what it did.
//! A face (the API, the console, MCP) reads through [`Reads`], whose methods take `&self` and
//! run no statement that changes a row.

use writ_core::ActionId;
use writ_identity::{AgentId, GrantId, UserId};
use writ_store::identity::{
    AgentRecord, ApiKeyRecord, CredentialVersion, GrantFilter, PasswordRecord, StoredGrant,
    UserRecord,
};
use writ_store::{
    ActionFilter, ActionRow, ApprovalRow, ApprovalState, Database, DecisionRow, EntryFilter,
    StoreError, StoredCheckpoint, StoredEntry,
};
use writ_vault::CredentialName;

/// A read-only view of the gateway's store (see the module doc).
#[derive(Clone, Copy)]
pub struct Reads<'a> {
    db: &'a dyn Database,
}

impl<'a> Reads<'a> {
    pub(crate) fn new(db: &'a dyn Database) -> Self {
        Reads { db }
    }

    /// The database answers (health checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    // The log.

    /// The number of entries in the log.
    pub async fn size(&self) -> Result<u64, StoreError> {
        self.db.size().await
    }

    pub async fn entries(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        self.db.entries(from_seq, limit).await
    }

    pub async fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        self.db.query(filter).await
    }

    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.db.checkpoints().await
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.db.latest_checkpoint().await
    }

    pub async fn inclusion_proof(
        &self,
        seq: u64,
        size: u64,
    ) -> Result<Vec<writ_audit::Hash>, StoreError> {
        self.db.inclusion_proof(seq, size).await
    }

    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<writ_audit::Hash>, StoreError> {
        self.db.consistency_proof(old_size, new_size).await
    }

    // Identities.

    pub async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.db.user(id).await
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.db.users().await
    }

    pub async fn agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        self.db.agent(id).await
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.db.agents().await
    }

    /// The key with this SHA-256 hash (keys are stored only as hashes).
    pub async fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.db.api_key(key_hash).await
    }

    pub async fn grant(&self, id: &GrantId) -> Result<Option<StoredGrant>, StoreError> {
        self.db.grant(id).await
    }

    pub async fn grants(&self, filter: &GrantFilter) -> Result<Vec<StoredGrant>, StoreError> {
        self.db.grants(filter).await
    }

    /// The versions of the vault's credentials (names, scopes, states; never a secret).
    pub async fn credential_versions(
        &self,
        name: Option<&CredentialName>,
    ) -> Result<Vec<CredentialVersion>, StoreError> {
        self.db.credential_versions(name).await
    }

    /// Whether `user` has a console password, since when, and its lock state.
    pub async fn password(&self, user: &UserId) -> Result<Option<PasswordRecord>, StoreError> {
        self.db.password(user).await
    }

    // Actions and approvals.

    pub async fn action(&self, id: &ActionId) -> Result<Option<ActionRow>, StoreError> {
        self.db.action(id).await
    }

    pub async fn actions(&self, filter: &ActionFilter) -> Result<Vec<ActionRow>, StoreError> {
        self.db.actions(filter).await
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        self.db.approval(id).await
    }

    pub async fn approval_for_action(
        &self,
        id: &ActionId,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        self.db.approval_for_action(id).await
    }

    pub async fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        self.db.approvals(state, limit).await
    }

    pub async fn decisions(&self, approval_id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        self.db.decisions(approval_id).await
    }
}
