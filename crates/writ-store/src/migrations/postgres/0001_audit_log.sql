-- The Merkle audit log. Append-only: triggers below refuse UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_entries (
    seq        BIGINT PRIMARY KEY,       -- the Merkle leaf index, from 0
    time_us    BIGINT NOT NULL,          -- microseconds since the Unix epoch (UTC)
    action_id  TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    actor      TEXT,
    entry      BYTEA  NOT NULL,          -- the entry's RFC 8785 canonical JSON: the leaf data
    leaf_hash  BYTEA  NOT NULL           -- SHA-256(0x00 || entry)
);
CREATE INDEX audit_entries_by_action ON audit_entries (action_id, seq);
CREATE INDEX audit_entries_by_time ON audit_entries (time_us);
CREATE INDEX audit_entries_by_actor ON audit_entries (actor, seq) WHERE actor IS NOT NULL;

-- Hashes of the perfect subtrees above the leaves: (level, idx) covers leaves
-- [idx << level, (idx + 1) << level). Roots and proofs read O(log n) of these rows.
CREATE TABLE audit_nodes (
    level SMALLINT NOT NULL,
    idx   BIGINT   NOT NULL,
    hash  BYTEA    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), one per tree size.
CREATE TABLE audit_checkpoints (
    tree_size  BIGINT PRIMARY KEY,
    root_hash  BYTEA  NOT NULL,
    note       TEXT   NOT NULL,
    created_us BIGINT NOT NULL
);

CREATE FUNCTION writ_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME;
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION writ_refuse_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION writ_refuse_change();
CREATE TRIGGER audit_nodes_append_only BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION writ_refuse_change();
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION writ_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION writ_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION writ_refuse_change();
