-- Console passwords of local users: the Argon2id PHC string (parameters and salt inside), when
-- it was set (a console session opened with a password ends when this changes), and the count
-- of failed sign-ins with the lock they earned (2^(failures-5) seconds from the fifth failure,
-- at most 15 minutes). Never the password.
CREATE TABLE identity_user_passwords (
    user_id         TEXT    PRIMARY KEY REFERENCES identity_users (id) ON DELETE CASCADE,
    phc             TEXT    NOT NULL,
    set_us          BIGINT  NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    locked_until_us BIGINT
);
