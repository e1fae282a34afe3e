//! Grants: what a user authorized an agent to do, and the check of one action against a grant.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use writ_core::Timestamp;

use crate::amount::Amount;
use crate::constraint::{Constraint, glob_match, validate_glob, validate_pointer};
use crate::{AgentId, GrantId, IdentityError, UserId};

/// Who is asking to create or revoke a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User { id: UserId, admin: bool },
    Agent(AgentId),
}

/// A budget on the sum of one numeric argument over all uses (e.g. total `/amount` ≤ 5,000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SumBudget {
    pub pointer: String,
    pub max: Amount,
}

/// What a user asks for when creating a grant. Validated by [`GrantSpec::authorize`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub user: UserId,
    pub agent: AgentId,
    /// Exact action names or a prefix with `.*` (`github.*`).
    pub actions: Vec<String>,
    /// Resource globs (`acme/*`); empty means the grant does not restrict the resource.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    pub expires_at: Timestamp,
    #[serde(default)]
    pub max_uses: Option<u64>,
    #[serde(default)]
    pub sum_budget: Option<SumBudget>,
}

/// A grant as stored. Immutable once created, except that it can be revoked: no code path
/// widens or extends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    #[serde(flatten)]
    pub spec: GrantSpec,
    pub created_by: UserId,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// How much of a grant's budgets has been used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub uses: u64,
    pub sum: Amount,
}

/// One action an agent wants to take under a grant.
#[derive(Debug, Clone, Copy)]
pub struct ActionAttempt<'a> {
    pub agent: &'a AgentId,
    pub action: &'a str,
    pub resource: Option<&'a str>,
    pub arguments: &'a Value,
}

/// Why a grant does not cover an action, in words for the user who issued it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantDenial {
    #[error("grant {grant} was revoked at {at}")]
    Revoked { grant: GrantId, at: Timestamp },
    #[error("grant {grant} expired at {at}")]
    Expired { grant: GrantId, at: Timestamp },
    #[error("grant {grant} was given to agent {holder}, not to agent {agent}")]
    WrongAgent {
        grant: GrantId,
        holder: AgentId,
        agent: AgentId,
    },
    #[error("grant {grant} does not allow the action {action} (it allows {allowed})")]
    Action {
        grant: GrantId,
        action: String,
        allowed: String,
    },
    #[error(
        "the token for grant {grant} is limited to {allowed} and does not allow the action {action}"
    )]
    TokenAction {
        grant: GrantId,
        action: String,
        allowed: String,
    },
    #[error("grant {grant} does not cover the resource {resource} (it covers {allowed})")]
    Resource {
        grant: GrantId,
        resource: String,
        allowed: String,
    },
    #[error("grant {grant} only covers named resources ({allowed}), and this action names none")]
    NoResource { grant: GrantId, allowed: String },
    #[error("grant {grant} does not allow these arguments: {reason}")]
    Constraint { grant: GrantId, reason: String },
    #[error("grant {grant} has been used {max} times, its limit")]
    UsesExhausted { grant: GrantId, max: u64 },
    #[error(
        "grant {grant} allows a total {pointer} of {max}; {used} is used, so {requested} more would exceed it"
    )]
    SumExceeded {
        grant: GrantId,
        pointer: String,
        max: Amount,
        used: Amount,
        requested: Amount,
    },
}

/// Whether `action` is covered by one of the grant's action patterns.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(prefix) => action
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.')),
        None => pattern == action,
    }
}

fn validate_action_pattern(p: &str) -> Result<(), IdentityError> {
    let name = p.strip_suffix(".*").unwrap_or(p);
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidGrant(format!(
            "action {p:?} is not an action name (like github.create_issue) or a prefix ending in .* (like github.*)"
        )))
    }
}

impl GrantSpec {
    /// Checks the spec and that `principal` may issue it: only the user named in the grant, or
    /// an admin, can create a grant. An agent never can, so an agent cannot create, widen or
    /// extend a grant.
    pub fn authorize(self, principal: &Principal, now: Timestamp) -> Result<Grant, IdentityError> {
        let created_by = match principal {
            Principal::Agent(agent) => {
                return Err(IdentityError::Forbidden(format!(
                    "agent {agent} cannot create, widen or extend a grant; only the user it acts for (or an admin) can"
                )));
            }
            Principal::User { id, admin } => {
                if *id != self.user && !admin {
                    return Err(IdentityError::Forbidden(format!(
                        "user {id} cannot create a grant on behalf of user {}; only that user or an admin can",
                        self.user
                    )));
                }
                id.clone()
            }
        };
        self.validate(now)?;
        Ok(Grant {
            id: GrantId::generate(),
            spec: self,
            created_by,
            created_at: now,
            revoked_at: None,
        })
    }

    pub fn validate(&self, now: Timestamp) -> Result<(), IdentityError> {
        let bad = |m: String| Err(IdentityError::InvalidGrant(m));
        if self.actions.is_empty() {
            return bad("a grant must name at least one action".into());
        }
        for a in &self.actions {
            validate_action_pattern(a)?;
        }
        for r in &self.resources {
            validate_glob(r).or_else(|m| bad(format!("resource {m}")))?;
        }
        for c in &self.constraints {
            c.validate()?;
        }
        if self.expires_at <= now {
            return bad(format!(
                "the expiry {} is not in the future",
                self.expires_at
            ));
        }
        if self.max_uses == Some(0) {
            return bad("max_uses of 0 would make the grant useless; omit it for no limit".into());
        }
        if let Some(b) = &self.sum_budget {
            validate_pointer(&b.pointer)?;
            if b.max <= Amount::ZERO {
                return bad(format!("the sum budget on {} must be positive", b.pointer));
            }
        }
        if self.actions.len() > 64 || self.resources.len() > 64 || self.constraints.len() > 64 {
            return bad(
                "a grant may list at most 64 actions, resources and constraints each".into(),
            );
        }
        Ok(())
    }
}

impl Grant {
    pub fn is_live(&self, now: Timestamp) -> Result<(), GrantDenial> {
        if let Some(at) = self.revoked_at {
            return Err(GrantDenial::Revoked {
                grant: self.id.clone(),
                at,
            });
        }
        if now >= self.spec.expires_at {
            return Err(GrantDenial::Expired {
                grant: self.id.clone(),
                at: self.spec.expires_at,
            });
        }
        Ok(())
    }

    /// Checks one action against the grant and its usage so far. On success returns what the
    /// action adds to the sum budget (zero without one); the store then consumes the budget
    /// atomically, so concurrent uses cannot overspend even if both pass this check.
    pub fn check(
        &self,
        attempt: &ActionAttempt<'_>,
        now: Timestamp,
        usage: Usage,
    ) -> Result<Amount, GrantDenial> {
        let grant = || self.id.clone();
        self.is_live(now)?;
        if *attempt.agent != self.spec.agent {
            return Err(GrantDenial::WrongAgent {
                grant: grant(),
                holder: self.spec.agent.clone(),
                agent: attempt.agent.clone(),
            });
        }
        if !self
            .spec
            .actions
            .iter()
            .any(|p| action_matches(p, attempt.action))
        {
            return Err(GrantDenial::Action {
                grant: grant(),
                action: attempt.action.to_owned(),
                allowed: self.spec.actions.join(", "),
            });
        }
        if !self.spec.resources.is_empty() {
            let allowed = || self.spec.resources.join(", ");
            match attempt.resource {
                None => {
                    return Err(GrantDenial::NoResource {
                        grant: grant(),
                        allowed: allowed(),
                    });
                }
                Some(r) if !self.spec.resources.iter().any(|p| glob_match(p, r)) => {
                    return Err(GrantDenial::Resource {
                        grant: grant(),
                        resource: r.to_owned(),
                        allowed: allowed(),
                    });
                }
                Some(_) => {}
            }
        }
        for c in &self.spec.constraints {
            c.check(attempt.arguments)
                .map_err(|reason| GrantDenial::Constraint {
                    grant: grant(),
                    reason,
                })?;
        }
        if let Some(max) = self.spec.max_uses
            && usage.uses >= max
        {
            return Err(GrantDenial::UsesExhausted {
                grant: grant(),
                max,
            });
        }
        let Some(budget) = &self.spec.sum_budget else {
            return Ok(Amount::ZERO);
        };
        let p = &budget.pointer;
        let constraint = |reason: String| GrantDenial::Constraint {
            grant: grant(),
            reason,
        };
        let requested = match attempt.arguments.pointer(p) {
            None => {
                return Err(constraint(format!(
                    "the argument {p} is missing, and this grant budgets it"
                )));
            }
            Some(Value::Number(n)) => {
                Amount::from_json(n).map_err(|e| constraint(format!("{p}: {e}")))?
            }
            Some(_) => return Err(constraint(format!("{p} must be a number"))),
        };
        if requested < Amount::ZERO {
            return Err(constraint(format!(
                "{p} is {requested}; a budgeted amount cannot be negative"
            )));
        }
        match usage.sum.checked_add(requested) {
            Some(total) if total <= budget.max => Ok(requested),
            _ => Err(GrantDenial::SumExceeded {
                grant: grant(),
                pointer: p.clone(),
                max: budget.max,
                used: usage.sum,
                requested,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000).unwrap()
    }

    fn alice() -> Principal {
        Principal::User {
            id: UserId::new("alice").unwrap(),
            admin: false,
        }
    }

    fn spec() -> GrantSpec {
        serde_json::from_value(json!({
            "user": "alice",
            "agent": "bot",
            "actions": ["payments.send", "github.*"],
            "resources": ["acme/*"],
            "constraints": [
                {"pointer": "/amount", "rule": "range", "min": 0.01, "max": 500},
                {"pointer": "/to", "rule": "email_domain_in", "domains": ["example.com"]}
            ],
            "expires_at": "2030-01-01T00:00:00Z",
            "max_uses": 3,
            "sum_budget": {"pointer": "/amount", "max": 1000}
        }))
        .unwrap()
    }

    fn attempt<'a>(agent: &'a AgentId, action: &'a str, args: &'a Value) -> ActionAttempt<'a> {
        ActionAttempt {
            agent,
            action,
            resource: Some("acme/pay"),
            arguments: args,
        }
    }

    #[test]
    fn only_the_user_or_an_admin_creates_grants() {
        let now = at(1_700_000_000);
        let err = spec()
            .authorize(&Principal::Agent(AgentId::new("bot").unwrap()), now)
            .unwrap_err();
        assert!(err.to_string().contains("agent bot cannot create"), "{err}");
        let mallory = Principal::User {
            id: UserId::new("mallory").unwrap(),
            admin: false,
        };
        assert!(spec().authorize(&mallory, now).is_err());
        let admin = Principal::User {
            id: UserId::new("root").unwrap(),
            admin: true,
        };
        let g = spec().authorize(&admin, now).unwrap();
        assert_eq!(g.created_by.as_str(), "root");
        assert!(spec().authorize(&alice(), now).is_ok());
    }

    #[test]
    fn invalid_specs_are_refused() {
        let now = at(1_700_000_000);
        let mut s = spec();
        s.expires_at = at(1_600_000_000);
        assert!(
            s.authorize(&alice(), now)
                .unwrap_err()
                .to_string()
                .contains("not in the future")
        );
        for actions in [
            vec![],
            vec!["*".to_owned()],
            vec!["github.".to_owned()],
            vec!["a b".to_owned()],
        ] {
            let mut s = spec();
            s.actions = actions.clone();
            assert!(s.authorize(&alice(), now).is_err(), "{actions:?}");
        }
        let mut s = spec();
        s.max_uses = Some(0);
        assert!(s.authorize(&alice(), now).is_err());
    }

    #[test]
    fn checks_in_order_with_plain_words() {
        let now = at(1_700_000_000);
        let g = spec().authorize(&alice(), now).unwrap();
        let bot = AgentId::new("bot").unwrap();
        let other = AgentId::new("other").unwrap();
        let ok = json!({"amount": 200, "to": "x@example.com"});
        let too_much = json!({"amount": 501, "to": "x@example.com"});
        let negative = json!({"amount": -5000000, "to": "x@example.com"});
        let zero = json!({"amount": 0, "to": "x@example.com"});
        let routed = json!({"amount": 5, "to": "x%evil.io@example.com"});
        assert_eq!(
            g.check(&attempt(&bot, "payments.send", &ok), now, Usage::default()),
            Ok(Amount(200_000_000))
        );
        assert!(
            g.check(&attempt(&bot, "github.merge", &ok), now, Usage::default())
                .is_ok()
        );
        let cases: Vec<(ActionAttempt<'_>, Usage, &str)> = vec![
            (
                attempt(&other, "payments.send", &ok),
                Usage::default(),
                "not to agent other",
            ),
            (
                attempt(&bot, "payments.refund", &ok),
                Usage::default(),
                "does not allow the action payments.refund",
            ),
            (
                attempt(&bot, "githubx.merge", &ok),
                Usage::default(),
                "does not allow the action",
            ),
            (
                ActionAttempt {
                    resource: Some("evil/pay"),
                    ..attempt(&bot, "payments.send", &ok)
                },
                Usage::default(),
                "does not cover the resource evil/pay",
            ),
            (
                ActionAttempt {
                    resource: None,
                    ..attempt(&bot, "payments.send", &ok)
                },
                Usage::default(),
                "names none",
            ),
            (
                attempt(&bot, "payments.send", &too_much),
                Usage::default(),
                "amount 501 is above the grant's maximum 500",
            ),
            (
                attempt(&bot, "payments.send", &negative),
                Usage::default(),
                "does not allow these arguments: amount -5000000 is below the grant's minimum 0.01",
            ),
            (
                attempt(&bot, "payments.send", &zero),
                Usage::default(),
                "amount 0 is below the grant's minimum 0.01",
            ),
            (
                attempt(&bot, "payments.send", &routed),
                Usage::default(),
                "whose local part contains '%'",
            ),
            (
                attempt(&bot, "payments.send", &ok),
                Usage {
                    uses: 3,
                    sum: Amount::ZERO,
                },
                "used 3 times",
            ),
            (
                attempt(&bot, "payments.send", &ok),
                Usage {
                    uses: 1,
                    sum: Amount(900_000_000),
                },
                "would exceed",
            ),
        ];
        for (a, usage, words) in cases {
            let err = g.check(&a, now, usage).unwrap_err().to_string();
            assert!(err.contains(words), "expected {words:?} in {err:?}");
        }
        let expired = g.check(
            &attempt(&bot, "payments.send", &ok),
            at(1_900_000_000),
            Usage::default(),
        );
        assert!(matches!(expired, Err(GrantDenial::Expired { .. })));
        let mut revoked = g.clone();
        revoked.revoked_at = Some(now);
        assert!(matches!(
            revoked.check(&attempt(&bot, "payments.send", &ok), now, Usage::default()),
            Err(GrantDenial::Revoked { .. })
        ));
    }

    #[test]
    fn action_patterns() {
        assert!(action_matches("github.*", "github.issues.create"));
        assert!(!action_matches("github.*", "github"));
        assert!(!action_matches("github.*", "githubx.a"));
        assert!(action_matches("a.b", "a.b"));
        assert!(!action_matches("a.b", "a.bc"));
    }
}
