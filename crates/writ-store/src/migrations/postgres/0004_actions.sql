-- Governed actions and their approvals. Each change here is committed in the same transaction
-- as the audit entries that record it (see actions.rs); the audit log is the evidence, these
-- tables are the current state, kept for lookups and the approval workflow.
CREATE TABLE actions (
    id              TEXT    PRIMARY KEY,
    agent_id        TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    grant_id        TEXT,
    connector       TEXT    NOT NULL,
    operation       TEXT    NOT NULL,
    action_hash     TEXT    NOT NULL,   -- hex SHA-256 of the canonical action
    idempotency_key TEXT,
    state           TEXT    NOT NULL,
    request         TEXT    NOT NULL,   -- JSON: arguments, intent, rationale
    result          TEXT,               -- JSON: the last answer
    created_us      BIGINT  NOT NULL,
    updated_us      BIGINT  NOT NULL
);
CREATE UNIQUE INDEX actions_idempotency ON actions (agent_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX actions_by_created ON actions (created_us);
CREATE INDEX actions_by_agent ON actions (agent_id, created_us);
CREATE INDEX actions_by_user ON actions (user_id, created_us);
CREATE INDEX actions_by_state ON actions (state, created_us);

CREATE TABLE approvals (
    id          TEXT    PRIMARY KEY,
    action_id   TEXT    NOT NULL UNIQUE REFERENCES actions (id),
    action_hash TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,       -- the user the agent acts for: never its approver
    approvers   TEXT    NOT NULL,       -- JSON array of user ids and group:NAME
    quorum      BIGINT  NOT NULL CHECK (quorum >= 1),
    expires_us  BIGINT  NOT NULL,
    reason      TEXT,
    created_us  BIGINT  NOT NULL,
    updated_us  BIGINT  NOT NULL
);
CREATE INDEX approvals_by_state ON approvals (state, created_us);

-- One decision per approver per approval; decisions are never changed or removed.
CREATE TABLE approval_decisions (
    approval_id TEXT    NOT NULL REFERENCES approvals (id),
    approver    TEXT    NOT NULL,
    decision    TEXT    NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment     TEXT,
    time_us     BIGINT  NOT NULL,
    PRIMARY KEY (approval_id, approver)
);
CREATE TRIGGER approval_decisions_final BEFORE UPDATE OR DELETE ON approval_decisions
    FOR EACH ROW EXECUTE FUNCTION writ_refuse_change();
