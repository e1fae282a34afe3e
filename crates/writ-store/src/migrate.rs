//! Embedded schema migrations, applied in order at open. Each backend has its own SQL; the
//! version numbers are shared so that both schemas move together.

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit_log",
        sql: include_str!("migrations/sqlite/0001_audit_log.sql"),
    },
    Migration {
        version: 2,
        name: "identity",
        sql: include_str!("migrations/sqlite/0002_identity.sql"),
    },
    Migration {
        version: 3,
        name: "assertion_replay",
        sql: include_str!("migrations/sqlite/0003_assertion_replay.sql"),
    },
    Migration {
        version: 4,
        name: "actions",
        sql: include_str!("migrations/sqlite/0004_actions.sql"),
    },
    Migration {
        version: 5,
        name: "console_sessions",
        sql: include_str!("migrations/sqlite/0005_console_sessions.sql"),
    },
    Migration {
        version: 6,
        name: "passwords",
        sql: include_str!("migrations/sqlite/0006_passwords.sql"),
    },
    Migration {
        version: 7,
        name: "agent_controls",
        sql: include_str!("migrations/sqlite/0007_agent_controls.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit_log",
        sql: include_str!("migrations/postgres/0001_audit_log.sql"),
    },
    Migration {
        version: 2,
        name: "identity",
        sql: include_str!("migrations/postgres/0002_identity.sql"),
    },
    Migration {
        version: 3,
        name: "assertion_replay",
        sql: include_str!("migrations/postgres/0003_assertion_replay.sql"),
    },
    Migration {
        version: 4,
        name: "actions",
        sql: include_str!("migrations/postgres/0004_actions.sql"),
    },
    Migration {
        version: 5,
        name: "console_sessions",
        sql: include_str!("migrations/postgres/0005_console_sessions.sql"),
    },
    Migration {
        version: 6,
        name: "passwords",
        sql: include_str!("migrations/postgres/0006_passwords.sql"),
    },
    Migration {
        version: 7,
        name: "agent_controls",
        sql: include_str!("migrations/postgres/0007_agent_controls.sql"),
    },
];

/// The migrations still to apply on a database at `current` version.
pub(crate) fn pending(
    all: &'static [Migration],
    current: i64,
) -> Result<&'static [Migration], crate::StoreError> {
    let known = all.last().map_or(0, |m| m.version);
    if current > known {
        return Err(crate::StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok(&all[all.iter().take_while(|m| m.version <= current).count()..])
}

pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS writ_schema (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_us BIGINT NOT NULL
)";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn versions_increase_and_both_backends_agree() {
        for all in [SQLITE, POSTGRES] {
            assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        }
        let names = |all: &[Migration]| all.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    #[test]
    fn pending_starts_after_the_current_version() {
        let versions = |current| {
            pending(SQLITE, current)
                .unwrap()
                .iter()
                .map(|m| m.version)
                .collect::<Vec<_>>()
        };
        let last = SQLITE.last().unwrap().version;
        assert_eq!(versions(0).len(), SQLITE.len());
        assert_eq!(
            versions(4).first(),
            SQLITE
                .iter()
                .find(|m| m.version > 4)
                .map(|m| m.version)
                .as_ref()
        );
        assert!(versions(last).is_empty());
        assert!(matches!(
            pending(SQLITE, last + 1),
            Err(crate::StoreError::SchemaTooNew { .. })
        ));
    }
}
