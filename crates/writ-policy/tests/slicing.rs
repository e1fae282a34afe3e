//! Slicing changes no answer: on generated policy sets and generated requests, the sliced policy
//! set reports exactly the satisfied forbids, satisfied permits and errors of the whole set, and
//! Cedar's own decision over the whole set agrees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema};
use proptest::prelude::*;
use serde_json::json;
use writ_policy::SlicedPolicySet;

const SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group];
entity Agent in [User, Group] { user: User };
entity Doc;
action "db.read", "db.write";
action "db.query" in ["db.read"] appliesTo { principal: [Agent], resource: [Doc], context: { n: Long } };
action "db.insert" in ["db.write"] appliesTo { principal: [Agent], resource: [Doc], context: { n: Long } };
action "db.delete" in ["db.write"] appliesTo { principal: [Agent], resource: [Doc], context: { n: Long } };
action "mail.send" appliesTo { principal: [Agent], resource: [Doc], context: { n: Long } };
"#;

const ACTIONS: [&str; 4] = ["db.query", "db.insert", "db.delete", "mail.send"];
const ACTION_REFS: [&str; 6] = [
    "db.query",
    "db.insert",
    "db.delete",
    "mail.send",
    "db.read",
    "db.write",
];

fn principal_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_owned()),
        (0..3u8).prop_map(|i| format!("principal == Agent::\"a{i}\"")),
        (0..3u8).prop_map(|i| format!("principal in User::\"u{i}\"")),
        (0..4u8).prop_map(|i| format!("principal in Group::\"g{i}\"")),
        Just("principal is Agent".to_owned()),
        Just("principal is User".to_owned()),
        (0..4u8).prop_map(|i| format!("principal is Agent in Group::\"g{i}\"")),
        (0..3u8).prop_map(|i| format!("principal in Agent::\"a{i}\"")),
    ]
}

fn action_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        (0..6usize).prop_map(|i| format!("action == Action::\"{}\"", ACTION_REFS[i])),
        (0..6usize, 0..6usize).prop_map(|(i, j)| format!(
            "action in [Action::\"{}\", Action::\"{}\"]",
            ACTION_REFS[i], ACTION_REFS[j]
        )),
        (0..6usize).prop_map(|i| format!("action in Action::\"{}\"", ACTION_REFS[i])),
    ]
}

fn resource_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("resource".to_owned()),
        1 => (0..3u8).prop_map(|i| format!("resource == Doc::\"d{i}\"")),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => (0..6i64).prop_map(|k| format!(" when {{ context.n > {k} }}")),
        1 => (0..3u8).prop_map(|i| format!(" unless {{ principal in Group::\"g{i}\" }}")),
        // Errors (overflow) for n >= 2: errors must be reported identically too.
        1 => Just(" when { context.n * 4611686018427387904 > 0 }".to_owned()),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        principal_scope(),
        action_scope(),
        resource_scope(),
        condition(),
    )
        .prop_map(|(permit, p, a, r, c)| {
            format!(
                "{} ({p}, {a}, {r}){c};",
                if permit { "permit" } else { "forbid" }
            )
        })
}

#[derive(Debug, Clone)]
struct Req {
    agent: u8,
    user: u8,
    groups: Vec<u8>,
    agent_groups: Vec<u8>,
    group_parent: Option<(u8, u8)>,
    action: usize,
    doc: u8,
    n: i64,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..3u8,
        0..3u8,
        proptest::collection::vec(0..4u8, 0..3),
        proptest::collection::vec(0..4u8, 0..2),
        proptest::option::of((0..4u8, 0..4u8)),
        0..4usize,
        0..3u8,
        0..5i64,
    )
        .prop_map(
            |(agent, user, groups, agent_groups, group_parent, action, doc, n)| Req {
                agent,
                user,
                groups,
                agent_groups,
                group_parent,
                action,
                doc,
                n,
            },
        )
}

fn cedar_request(schema: &Schema, r: &Req) -> (Request, Entities) {
    let group = |g: &u8| json!({"type": "Group", "id": format!("g{g}")});
    let user = json!({"type": "User", "id": format!("u{}", r.user)});
    let mut agent_parents = vec![user.clone()];
    agent_parents.extend(r.agent_groups.iter().map(group));
    let mut entities = vec![
        json!({"uid": {"type": "Agent", "id": format!("a{}", r.agent)}, "attrs": {"user": {"__entity": user}}, "parents": agent_parents}),
        json!({"uid": user, "attrs": {}, "parents": r.groups.iter().map(group).collect::<Vec<_>>()}),
        json!({"uid": {"type": "Doc", "id": format!("d{}", r.doc)}, "attrs": {}, "parents": []}),
    ];
    for g in 0..4u8 {
        let parents: Vec<_> = match r.group_parent {
            Some((child, parent)) if child == g && parent != g => vec![group(&parent)],
            _ => vec![],
        };
        entities.push(json!({"uid": group(&g), "attrs": {}, "parents": parents}));
    }
    let entities = Entities::from_json_value(json!(entities), Some(schema)).unwrap();
    let action = EntityUid::from_str(&format!("Action::\"{}\"", ACTIONS[r.action])).unwrap();
    let request = Request::new(
        EntityUid::from_str(&format!("Agent::\"a{}\"", r.agent)).unwrap(),
        action.clone(),
        EntityUid::from_str(&format!("Doc::\"d{}\"", r.doc)).unwrap(),
        Context::from_json_value(json!({"n": r.n}), Some((schema, &action))).unwrap(),
        Some(schema),
    )
    .unwrap();
    (request, entities)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sliced_evaluation_equals_full_evaluation(
        policies in proptest::collection::vec(policy(), 0..40),
        requests in proptest::collection::vec(req(), 1..8),
    ) {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).unwrap();
        let set = PolicySet::from_str(&policies.join("\n")).unwrap();
        let sliced = SlicedPolicySet::new(&set, &schema).unwrap();
        let unmerged = SlicedPolicySet::new(&set, &schema).unwrap().without_merging();
        let full = SlicedPolicySet::unsliced(&set).unwrap();
        let raw = Authorizer::new();
        for r in &requests {
            let (request, entities) = cedar_request(&schema, r);
            let a = sliced.authorize(&request, &entities);
            let b = full.authorize(&request, &entities);
            let c = unmerged.authorize(&request, &entities);
            let ids = |v: &[cedar_policy::PolicyId]| sorted(v.iter().map(ToString::to_string).collect());
            prop_assert_eq!(ids(&c.forbids), ids(&b.forbids));
            prop_assert_eq!(ids(&c.permits), ids(&b.permits));
            prop_assert_eq!(c.errors.len(), b.errors.len());
            prop_assert_eq!(ids(&a.forbids), ids(&b.forbids));
            prop_assert_eq!(ids(&a.permits), ids(&b.permits));
            prop_assert_eq!(
                sorted(a.errors.iter().map(|(id, _)| id.to_string()).collect()),
                sorted(b.errors.iter().map(|(id, _)| id.to_string()).collect())
            );
            prop_assert_eq!(
                ids(&sliced.satisfied_permits(&request, &entities)),
                ids(&full.satisfied_permits(&request, &entities))
            );
            // And the reference itself is Cedar's answer over the whole set.
            let cedar = raw.is_authorized(&request, &set, &entities);
            prop_assert_eq!(a.decision(), cedar.decision());
            prop_assert_eq!(ids(a.determining()), sorted(cedar.diagnostics().reason().map(ToString::to_string).collect()));
            prop_assert_eq!(a.errors.len(), cedar.diagnostics().errors().count());
        }
    }
}
