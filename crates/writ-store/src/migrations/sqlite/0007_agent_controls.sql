-- Users and agents share one namespace, so that `bob` names one principal only: every user id
-- and every agent id is a row here, inserted in the same transaction as the user or agent.
-- Existing ids are copied in; should a user and an agent already share one, the user keeps it
-- (both rows stay readable; new principals can no longer take a taken name).
CREATE TABLE identity_names (
    name TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'agent'))
) WITHOUT ROWID;
INSERT OR IGNORE INTO identity_names (name, kind) SELECT id, 'user' FROM identity_users;
INSERT OR IGNORE INTO identity_names (name, kind) SELECT id, 'agent' FROM identity_agents;

-- An agent can be disabled (its keys and tokens are refused on their next request) and its
-- credential generation counts rotations: a delegated token carries the generation it was
-- minted under and is refused once the agent's generation moves on.
ALTER TABLE identity_agents ADD COLUMN disabled_us INTEGER;
ALTER TABLE identity_agents ADD COLUMN key_generation INTEGER NOT NULL DEFAULT 0;
