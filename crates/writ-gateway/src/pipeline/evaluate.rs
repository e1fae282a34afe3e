//! The decision on an action: the grant check first (live, this agent, action, resource,
//! constraints, budget), then policy. The first evaluation and the re-evaluation after approval
//! build the same policy request here; only the approval facts differ.

use serde_json::{Value, json};
use writ_identity::{ActionAttempt, Grant, GrantDenial, UserId};
use writ_policy::{
    ApprovalFacts, PolicyRequest, Principal, RequestContext, RequestTime, Resource, ToolFacts,
    Verdict,
};

use super::Caller;
use super::entries::verdict_json;
use crate::error::Error;
use crate::gateway::Gateway;

/// What is evaluated: the action, its resource and arguments, as the request gave them.
pub(super) struct Subject<'a> {
    pub connector: &'a str,
    pub operation: &'a str,
    pub resource: &'a writ_connectors::ResourceRef,
    pub args: &'a Value,
    pub intent: &'a str,
    /// The tool's annotations (MCP upstreams) as read once for this evaluation, so that the
    /// record keeps exactly what policy saw.
    pub tool: Option<ToolFacts>,
}

impl Subject<'_> {
    /// `connector.operation`.
    pub fn action_name(&self) -> String {
        format!("{}.{}", self.connector, self.operation)
    }

    /// The grant check's view of this action by `caller`.
    pub fn attempt<'s>(&'s self, caller: &'s Caller, action_name: &'s str) -> ActionAttempt<'s> {
        ActionAttempt {
            agent: &caller.agent,
            action: action_name,
            resource: (self.resource.entity_type != "Connector")
                .then_some(self.resource.id.as_str()),
            arguments: self.args,
        }
    }
}

/// The policy request for `subject` by `caller` (whose user is in `groups`) under `grant`
/// (which the grant check found to cover it), with `approval` facts (none the first time).
pub(super) fn policy_request(
    gw: &Gateway,
    caller: &Caller,
    subject: &Subject<'_>,
    grant: &Grant,
    groups: Vec<String>,
    approval: ApprovalFacts,
) -> PolicyRequest {
    let action = subject.action_name();
    PolicyRequest {
        principal: Principal {
            agent: caller.agent.as_str().to_owned(),
            user: caller.user.as_str().to_owned(),
            groups,
            agent_groups: Vec::new(),
        },
        resource: Resource {
            kind: subject.resource.entity_type.clone(),
            id: subject.resource.id.clone(),
            attributes: subject.resource.attributes.clone(),
            parents: Vec::new(),
        },
        context: RequestContext {
            args: subject.args.clone(),
            grant: Some(grant_context(
                grant,
                gw.policy.current().action_groups(&action),
            )),
            intent: subject.intent.to_owned(),
            time: RequestTime::now_utc(),
            approval,
            tool: subject.tool,
        },
        action,
    }
}

/// The groups of the user an agent acts for; `None` if the user no longer exists.
pub(super) async fn user_groups(gw: &Gateway, user: &UserId) -> Result<Option<Vec<String>>, Error> {
    Ok(gw.db.user(user).await?.map(|u| u.groups))
}

/// An MCP tool's annotations for the policy context, as the connector knows them now.
pub(super) fn tool_facts(
    connector: &dyn writ_connectors::Connector,
    operation: &str,
) -> Option<ToolFacts> {
    connector.hints(operation).map(|h| ToolFacts {
        read_only: h.read_only,
        destructive: h.destructive,
        idempotent: h.idempotent,
        open_world: h.open_world,
    })
}

/// The grant as policy sees it: `context.grant`. Its scopes are the grant's action patterns and
/// the schema's action groups (`github.write`) of the action being evaluated, which the grant
/// check has already found the grant to cover; `X.*` also stands for `X.read` and `X.write`.
fn grant_context(grant: &Grant, action_groups: Vec<String>) -> Value {
    let mut scopes: Vec<String> = Vec::new();
    for a in &grant.spec.actions {
        scopes.push(a.clone());
        if let Some(prefix) = a.strip_suffix(".*") {
            scopes.push(format!("{prefix}.read"));
            scopes.push(format!("{prefix}.write"));
        }
    }
    for g in action_groups {
        if !scopes.contains(&g) {
            scopes.push(g);
        }
    }
    json!({
        "id": grant.id.as_str(),
        "scopes": scopes,
        "expires_at": grant.spec.expires_at.as_micros() / 1_000_000,
    })
}

/// The denial of an action the grant does not cover.
pub(super) fn grant_verdict(denial: &GrantDenial, bundle_version: &str) -> Verdict {
    denied(
        format!("the grant does not cover this action: {denial}"),
        bundle_version,
    )
}

/// A denial for one `reason` that no policy gave (the grant, a vanished connector, a changed
/// tool).
pub(super) fn denied(reason: String, bundle_version: &str) -> Verdict {
    Verdict::Deny {
        explanation: writ_policy::Explanation {
            determining_policies: Vec::new(),
            reasons: vec![reason],
            errors: Vec::new(),
            bundle_version: bundle_version.to_owned(),
        },
    }
}

/// The `evaluated` payload of a denial by the grant after all (its budget spent or revoked
/// meanwhile), with the grant's reason.
pub(super) fn grant_denial_payload(verdict: &Verdict, reason: &str) -> Value {
    json!({"verdict": verdict_json(verdict), "grant_check": reason})
}
