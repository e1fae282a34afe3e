-- The Merkle audit log. Append-only: triggers below refuse UPDATE and DELETE.
CREATE TABLE audit_entries (
    seq        INTEGER PRIMARY KEY,      -- the Merkle leaf index, from 0
    time_us    INTEGER NOT NULL,         -- microseconds since the Unix epoch (UTC)
    action_id  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    actor      TEXT,
    entry      BLOB    NOT NULL,         -- the entry's RFC 8785 canonical JSON: the leaf data
    leaf_hash  BLOB    NOT NULL          -- SHA-256(0x00 || entry)
);
CREATE INDEX audit_entries_by_action ON audit_entries (action_id, seq);
CREATE INDEX audit_entries_by_time ON audit_entries (time_us);
CREATE INDEX audit_entries_by_actor ON audit_entries (actor, seq) WHERE actor IS NOT NULL;

-- Hashes of the perfect subtrees above the leaves: (level, idx) covers leaves
-- [idx << level, (idx + 1) << level). Roots and proofs read O(log n) of these rows.
CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), one per tree size.
CREATE TABLE audit_checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    root_hash  BLOB    NOT NULL,
    note       TEXT    NOT NULL,
    created_us INTEGER NOT NULL
);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE on audit_entries is refused'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE on audit_entries is refused'); END;
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE on audit_nodes is refused'); END;
CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE on audit_nodes is refused'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE on audit_checkpoints is refused'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE on audit_checkpoints is refused'); END;
