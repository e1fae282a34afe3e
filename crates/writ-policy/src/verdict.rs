//! The three-way verdict and the explanation every verdict carries. These are serialized into the
//! audit log, so their JSON shape (snake_case, tagged by `verdict`) is part of Writ's record format.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the policy says about one request. Deny overrides everything; the default is Deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allow {
        explanation: Explanation,
    },
    Deny {
        explanation: Explanation,
    },
    /// Every satisfied `forbid` was an approval gate and some `permit` applies: the action may run
    /// once the approvers agree, after a second evaluation with the approval facts.
    RequireApproval {
        approval: ApprovalRequirement,
        explanation: Explanation,
    },
}

impl Verdict {
    pub fn kind(&self) -> VerdictKind {
        match self {
            Self::Allow { .. } => VerdictKind::Allow,
            Self::Deny { .. } => VerdictKind::Deny,
            Self::RequireApproval { .. } => VerdictKind::RequireApproval,
        }
    }

    pub fn explanation(&self) -> &Explanation {
        match self {
            Self::Allow { explanation }
            | Self::Deny { explanation }
            | Self::RequireApproval { explanation, .. } => explanation,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    pub fn approval(&self) -> Option<&ApprovalRequirement> {
        match self {
            Self::RequireApproval { approval, .. } => Some(approval),
            _ => None,
        }
    }

    /// Same outcome (kind and, for approvals, the same requirement), whatever the explanation.
    /// This is what shadow mode and `writ policy diff` compare.
    pub fn same_outcome(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.approval() == other.approval()
    }

    /// A Deny that explains itself with one reason and no determining policy.
    pub(crate) fn deny_because(
        reason: impl Into<String>,
        errors: Vec<String>,
        bundle_version: &str,
    ) -> Self {
        Self::Deny {
            explanation: Explanation {
                determining_policies: Vec::new(),
                reasons: vec![reason.into()],
                errors,
                bundle_version: bundle_version.to_owned(),
            },
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequireApproval { approval, .. } => write!(f, "require_approval ({approval})"),
            other => write!(f, "{}", other.kind()),
        }
    }
}

/// The verdict without its payload: what case files and diffs compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Allow,
    Deny,
    RequireApproval,
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
        })
    }
}

/// Why a verdict is what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The policies that decided: satisfied plain forbids for a Deny, the gates for a
    /// RequireApproval, the satisfied permits for an Allow. Empty for the default Deny.
    pub determining_policies: Vec<String>,
    /// The determining policies' `@reason` annotations (or a sentence from Writ for the default
    /// deny and for errors), in the same order.
    pub reasons: Vec<String>,
    /// Evaluation errors. Any error makes the verdict Deny (fail closed).
    pub errors: Vec<String>,
    /// The version of the bundle that decided (see [`crate::BundleVersion`]).
    pub bundle_version: String,
}

/// Who must approve, how many, and how long the request stays open. The merge of every satisfied
/// gate: the approval service must satisfy each entry of `gates`; `approvers`, `quorum` and
/// `expires` summarize them (union, maximum, minimum) for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequirement {
    /// `group:<name>` or `user:<id>`, in the order the gates list them, without duplicates.
    pub approvers: Vec<String>,
    pub quorum: u32,
    #[serde(rename = "expires_secs", with = "duration_secs")]
    pub expires: Duration,
    pub gates: Vec<Gate>,
}

impl ApprovalRequirement {
    pub(crate) fn merge(gates: Vec<Gate>) -> Self {
        let mut approvers: Vec<String> = Vec::new();
        for a in gates.iter().flat_map(|g| &g.approvers) {
            if !approvers.contains(a) {
                approvers.push(a.clone());
            }
        }
        Self {
            approvers,
            quorum: gates.iter().map(|g| g.quorum).max().unwrap_or(1),
            expires: gates
                .iter()
                .map(|g| g.expires)
                .min()
                .unwrap_or(DEFAULT_EXPIRY),
            gates,
        }
    }
}

impl fmt::Display for ApprovalRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {}, expires in {}",
            self.quorum,
            self.approvers.join(", "),
            format_duration(self.expires)
        )
    }
}

/// One approval gate: a `forbid` policy annotated `@approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub policy_id: String,
    pub approvers: Vec<String>,
    pub quorum: u32,
    #[serde(rename = "expires_secs", with = "duration_secs")]
    pub expires: Duration,
}

/// How long an approval request stays open when a gate has no `@expires`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Parses `30m`, `2h`, `1h30m`, `45s`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("`{text}` is not a duration: write it like 30m, 2h, 1h30m, 45s or 7d");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any || total == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

pub(crate) fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    let (days, rem) = (s / 86_400, s % 86_400);
    let (h, rem) = (rem / 3600, rem % 3600);
    let (m, sec) = (rem / 60, rem % 60);
    for (n, u) in [(days, 'd'), (h, 'h'), (m, 'm'), (sec, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{u}"));
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "30", "m", "3x", "0s", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
    }

    #[test]
    fn merged_requirement_takes_union_max_and_min() {
        let gate = |id: &str, who: &[&str], quorum, mins: u64| Gate {
            policy_id: id.into(),
            approvers: who.iter().map(|s| s.to_string()).collect(),
            quorum,
            expires: Duration::from_secs(mins * 60),
        };
        let r = ApprovalRequirement::merge(vec![
            gate("a", &["group:finance"], 1, 30),
            gate("b", &["group:maintainers", "group:finance"], 2, 60),
        ]);
        assert_eq!(r.approvers, ["group:finance", "group:maintainers"]);
        assert_eq!(r.quorum, 2);
        assert_eq!(r.expires, Duration::from_secs(1800));
        assert_eq!(r.gates.len(), 2);
    }

    #[test]
    fn verdict_json_is_tagged_snake_case() {
        let v = Verdict::RequireApproval {
            approval: ApprovalRequirement::merge(vec![Gate {
                policy_id: "g".into(),
                approvers: vec!["group:finance".into()],
                quorum: 1,
                expires: Duration::from_secs(1800),
            }]),
            explanation: Explanation::default(),
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["verdict"], "require_approval");
        assert_eq!(j["approval"]["expires_secs"], 1800);
        let back: Verdict = serde_json::from_value(j).unwrap();
        assert_eq!(back, v);
    }
}
