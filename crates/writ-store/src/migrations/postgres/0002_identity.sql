-- Identity: users and their groups, agents, API keys (hashes only), grants with their budgets.
CREATE TABLE identity_users (
    id           TEXT    PRIMARY KEY,
    display_name TEXT    NOT NULL,
    is_admin     BOOLEAN NOT NULL,
    created_us   BIGINT  NOT NULL
);

CREATE TABLE identity_user_groups (
    user_id    TEXT NOT NULL REFERENCES identity_users (id),
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_id, group_name)
);

CREATE TABLE identity_agents (
    id          TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL REFERENCES identity_users (id),
    public_key  TEXT,                    -- the agent's public JWK for client assertions
    created_us  BIGINT  NOT NULL
);

-- API keys are 256-bit random tokens; only SHA-256 of the key is kept.
CREATE TABLE identity_api_keys (
    key_hash     BYTEA   PRIMARY KEY,
    key_id       TEXT    NOT NULL UNIQUE, -- the public prefix shown in listings
    subject_kind TEXT    NOT NULL CHECK (subject_kind IN ('user', 'agent')),
    subject_id   TEXT    NOT NULL,
    created_us   BIGINT  NOT NULL,
    revoked_us   BIGINT
);
CREATE INDEX identity_api_keys_by_subject ON identity_api_keys (subject_kind, subject_id);

-- A grant's spec is immutable JSON; the columns beside it exist for queries and for the atomic
-- budget update (uses, sum_micros), which is the only UPDATE besides revocation.
CREATE TABLE identity_grants (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_us  BIGINT  NOT NULL,
    expires_us  BIGINT  NOT NULL,
    revoked_us  BIGINT,
    max_uses    BIGINT,
    max_sum     BIGINT,                 -- millionths
    uses        BIGINT  NOT NULL DEFAULT 0,
    sum_micros  BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX identity_grants_by_user ON identity_grants (user_id);
CREATE INDEX identity_grants_by_agent ON identity_grants (agent_id);

-- Vault: one row per credential version, sealed (envelope-encrypted) by writ-vault.
CREATE TABLE vault_credentials (
    name          TEXT    NOT NULL,
    owner         TEXT    NOT NULL,      -- '' for a shared credential, else the user id
    version       BIGINT  NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    master_key_id TEXT    NOT NULL,
    wrapped_key   BYTEA,                  -- NULL once retired: the data key is destroyed
    ciphertext    BYTEA,
    created_us    BIGINT  NOT NULL,
    retired_us    BIGINT,
    PRIMARY KEY (name, owner, version)
);
