-- Console sessions, kept in the database so that they survive a restart and are shared by every
-- replica. A session is found by the SHA-256 of its cookie; the cookie itself is never stored.
-- `sign_in` records how it was opened (the console re-checks that on every request).
CREATE TABLE console_sessions (
    id_hash    BYTEA   PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    sign_in    TEXT    NOT NULL,
    created_us BIGINT  NOT NULL,
    expires_us BIGINT  NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id, created_us);
CREATE INDEX console_sessions_expires ON console_sessions (expires_us);

-- OIDC sign-ins started and not yet finished (state, nonce, PKCE verifier), found by the SHA-256
-- of the browser's short-lived cookie and taken exactly once, on whichever replica the issuer
-- sends the browser back to.
CREATE TABLE console_pending_sign_ins (
    id_hash    BYTEA PRIMARY KEY,
    data       TEXT NOT NULL,
    expires_us BIGINT NOT NULL
);
CREATE INDEX console_pending_sign_ins_expires ON console_pending_sign_ins (expires_us);
