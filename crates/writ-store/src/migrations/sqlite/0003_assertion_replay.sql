-- Replay protection for agent client assertions (RFC 7523 `jti`): each (agent, jti) is accepted
-- once until the assertion can no longer be accepted (`expires_us` = its exp plus leeway).
-- Expired rows are pruned opportunistically on insert.
CREATE TABLE identity_assertion_jtis (
    agent      TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (agent, jti)
);
CREATE INDEX identity_assertion_jtis_expires ON identity_assertion_jtis (expires_us);
