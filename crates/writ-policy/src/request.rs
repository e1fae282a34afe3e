//! What Writ asks the policy: who (agent acting for a user), what (`connector.operation`), on what
//! (a connector's resource), in which context (arguments, grant, intent, time, approval facts).
//!
//! The mapping onto Cedar is fixed, and a bundle's schema must declare it (see
//! `examples/policies/README.md`):
//!
//! | Writ                          | Cedar                                                      |
//! |-------------------------------|------------------------------------------------------------|
//! | `principal.agent`             | principal `Agent::"<agent>"`, attribute `user: User`       |
//! | `principal.user`              | `User::"<user>"`, a parent of the agent                    |
//! | `principal.groups`            | `Group::"<g>"`, parents of the user                        |
//! | `principal.agent_groups`      | `Group::"<g>"`, parents of the agent                       |
//! | `action`                      | `Action::"<connector.operation>"`                          |
//! | `resource`                    | `<type>::"<id>"` with its attributes and parents           |
//! | `context`                     | `{ args, grant, intent, time, approval }`                  |
//!
//! So `principal in Group::"eng"` holds when the agent acts for a member of `eng`, and
//! `principal in User::"alice"` when it acts for alice.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
    Schema,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::RequestError;

/// One request for a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub principal: Principal,
    /// `connector.operation`, e.g. `github.merge_pull_request`.
    pub action: String,
    pub resource: Resource,
    pub context: RequestContext,
}

/// The agent that decided, and the user on whose authority it acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub agent: String,
    pub user: String,
    /// The user's groups (as the identity provider reports them).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Groups the agent itself belongs to (e.g. `trusted-agents`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_groups: Vec<String>,
}

/// The policy resource a connector maps the call to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Cedar entity type, e.g. `Repo`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<EntityRef>,
}

/// A reference to an entity: `{type, id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// The facts Writ computed about this call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// The call's arguments, as the connector validated them.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// The grant the call is made under (shape declared by the bundle's schema). A request without
    /// a grant fails schema validation when the schema requires one, and so is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Value>,
    /// The agent's stated intent.
    #[serde(default)]
    pub intent: String,
    /// When the call is evaluated. Policies see `unix`, `hour`, `minute` and `weekday` in this
    /// time's UTC offset, so Writ passes it in the organisation's office time zone.
    pub time: RequestTime,
    /// Present on the evaluation after approvers decided.
    #[serde(default)]
    pub approval: ApprovalFacts,
    /// What the tool says of itself, for the tools of an upstream MCP server: absent for other
    /// connectors. The schema declares it for the actions that get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolFacts>,
}

/// An MCP tool's annotations as policy sees them (`context.tool.destructive`), with the MCP
/// specification's defaults for what the server left out. They are the upstream's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFacts {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// The outcome of an approval, as the second evaluation sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFacts {
    /// Every gate's requirement was met (quorum reached, not expired, no self-approval).
    #[serde(default)]
    pub granted: bool,
    /// Who approved, as `user:<id>`.
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// An instant with the UTC offset policies should read hours and weekdays in.
/// Serialized as RFC 3339 (`2026-05-04T10:30:00+02:00`); a bare integer is read as Unix seconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTime(pub OffsetDateTime);

impl RequestTime {
    pub fn now_utc() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// Hour of day 0–23, in this time's offset.
    pub fn hour(&self) -> i64 {
        i64::from(self.0.hour())
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn weekday(&self) -> i64 {
        i64::from(self.0.weekday().number_from_monday())
    }

    fn to_cedar_json(self) -> Value {
        json!({
            "unix": self.0.unix_timestamp(),
            "hour": self.hour(),
            "minute": i64::from(self.0.minute()),
            "weekday": self.weekday(),
        })
    }
}

impl fmt::Display for RequestTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0.unix_timestamp()),
        }
    }
}

impl FromStr for RequestTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Self)
            .map_err(|e| format!("`{s}` is not an RFC 3339 time (like 2026-05-04T10:30:00Z): {e}"))
    }
}

impl Serialize for RequestTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Unix(i64),
        }
        match Repr::deserialize(d)? {
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Unix(n) => OffsetDateTime::from_unix_timestamp(n)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Turns [`PolicyRequest`]s into Cedar requests and entities for one schema. Built once per bundle.
#[derive(Debug)]
pub(crate) struct EntityModel {
    schema: Schema,
    action_type: EntityTypeName,
    agent_type: EntityTypeName,
    /// Every entity type the schema declares, by name, so that no request re-parses a type name.
    types: HashMap<String, EntityTypeName>,
    /// For each action of the schema: that action entity and its ancestor groups, ready to be
    /// cloned into a request's entities. Cedar's `Entities::from_json_value(.., Some(schema))`
    /// adds *every* action of the schema to every request, which dominates the cost of building a
    /// request for a large schema; a request only needs its own action's hierarchy.
    action_entities: HashMap<EntityUid, Entities>,
}

impl EntityModel {
    pub(crate) fn new(schema: &Schema) -> Self {
        let types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        let mut action_entities = HashMap::new();
        if let Ok(all) = schema.action_entities() {
            for action in schema.actions() {
                let mut uids = vec![action.clone()];
                if let Some(ancestors) = all.ancestors(action) {
                    uids.extend(ancestors.cloned());
                }
                let entities = uids.iter().filter_map(|u| all.get(u).cloned());
                if let Ok(entities) = Entities::from_entities(entities, None) {
                    action_entities.insert(action.clone(), entities);
                }
            }
        }
        Self {
            schema: schema.clone(),
            action_type: type_name("Action"),
            agent_type: type_name("Agent"),
            types,
            action_entities,
        }
    }

    /// The action groups `action` is in, per the schema (`github.write` for
    /// `github.create_issue`); empty for an action the schema does not declare.
    pub(crate) fn action_groups(&self, action: &str) -> Vec<String> {
        let uid = self.action_uid(action);
        self.action_entities
            .get(&uid)
            .and_then(|entities| entities.ancestors(&uid))
            .map(|groups| groups.map(|g| g.id().unescaped().to_owned()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn action_uid(&self, action: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(action))
    }

    /// Builds the Cedar request (validated against the schema) and its entities.
    pub(crate) fn to_cedar(
        &self,
        req: &PolicyRequest,
    ) -> Result<(Request, Entities), RequestError> {
        let p = &req.principal;
        let resource_type = self.types.get(&req.resource.kind).ok_or_else(|| {
            RequestError(format!(
                "resource type `{}` is not declared in the policy schema",
                req.resource.kind
            ))
        })?;
        let action = self.action_uid(&req.action);
        let base = self.action_entities.get(&action).ok_or_else(|| {
            RequestError(format!(
                "action `{}` is not declared in the policy schema",
                req.action
            ))
        })?;
        check_numbers(&req.context.args, &mut String::new())?;
        let principal =
            EntityUid::from_type_name_and_id(self.agent_type.clone(), EntityId::new(&p.agent));
        let resource = EntityUid::from_type_name_and_id(
            resource_type.clone(),
            EntityId::new(&req.resource.id),
        );
        // Fast path: build the values directly and let Cedar validate them against the schema.
        // Cedar's schema-guided JSON parsers cost far more than the evaluation itself. When the
        // plain reading of the JSON does not validate (an entity or extension value written as
        // a string, a wrong type), the schema-guided parsers below decide, and name the error.
        let entities = self
            .plain_entities(req, &principal, resource_type)
            .and_then(|e| base.clone().add_entities(e, Some(&self.schema)).ok());
        if let Some(entities) = &entities
            && let Some(context) = plain_context(&self.context_json(&req.context))
            && let Ok(request) = Request::new(
                principal.clone(),
                action.clone(),
                resource.clone(),
                context,
                Some(&self.schema),
            )
        {
            return Ok((request, entities.clone()));
        }
        let entities = match entities {
            Some(e) => e,
            None => base
                .clone()
                .add_entities_from_json_value(self.entities_json(req), Some(&self.schema))
                .map_err(|e| {
                    RequestError(format!(
                        "the request's entities do not match the policy schema: {e}"
                    ))
                })?,
        };
        let context = match Context::from_json_value(
            self.context_json(&req.context),
            Some((&self.schema, &action)),
        ) {
            Ok(c) => c,
            // An argument the schema declares `decimal` may come as an integer (`2` for `2.0`):
            // every number is read as a decimal once more before refusing.
            Err(e) => self.context_as_decimals(req, &action).ok_or_else(|| {
                let hint = if has_fraction(&req.context.args) {
                    " (an argument with a fraction reaches policy as a Cedar `decimal`: declare it \
                     `decimal` in the schema)"
                } else {
                    ""
                };
                RequestError(format!(
                    "the context of `{}` does not match the policy schema: {e}{hint}",
                    req.action
                ))
            })?,
        };
        let request = Request::new(principal, action, resource, context, Some(&self.schema))
            .map_err(|e| {
                RequestError(format!("the request does not match the policy schema: {e}"))
            })?;
        Ok((request, entities))
    }

    /// The context with every number of the arguments read as a Cedar `decimal`, if the
    /// arguments have a number and the schema accepts that reading.
    fn context_as_decimals(&self, req: &PolicyRequest, action: &EntityUid) -> Option<Context> {
        if !has_number(&req.context.args) {
            return None;
        }
        let mut json = self.context_json(&req.context);
        if let Some(args) = json.get_mut("args") {
            *args = numbers_as_decimals(args);
        }
        Context::from_json_value(json, Some((&self.schema, action))).ok()
    }

    /// The request's entities built directly (unvalidated), or `None` when the plain reading of
    /// the JSON cannot express them (then the schema-guided JSON parser is used).
    fn plain_entities(
        &self,
        req: &PolicyRequest,
        agent: &EntityUid,
        resource_type: &EntityTypeName,
    ) -> Option<Vec<Entity>> {
        let p = &req.principal;
        let r = &req.resource;
        if matches!(r.kind.as_str(), "Agent" | "User" | "Group") {
            return None;
        }
        let group_type = self.types.get("Group")?;
        let user_type = self.types.get("User")?;
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let user = uid(user_type, &p.user);
        let mut groups: Vec<&String> = Vec::new();
        for g in p.groups.iter().chain(&p.agent_groups) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let mut agent_parents: HashSet<EntityUid> = HashSet::from([user.clone()]);
        agent_parents.extend(p.agent_groups.iter().map(|g| uid(group_type, g)));
        let agent_attrs = HashMap::from([(
            "user".to_owned(),
            RestrictedExpression::new_entity_uid(user.clone()),
        )]);
        let mut out = vec![
            Entity::new(agent.clone(), agent_attrs, agent_parents).ok()?,
            Entity::new_no_attrs(user, p.groups.iter().map(|g| uid(group_type, g)).collect()),
        ];
        out.extend(
            groups
                .iter()
                .map(|g| Entity::new_no_attrs(uid(group_type, g), HashSet::new())),
        );
        let mut attrs = HashMap::with_capacity(r.attributes.len());
        for (k, v) in &r.attributes {
            attrs.insert(k.clone(), plain_value(v)?);
        }
        let mut parents = HashSet::with_capacity(r.parents.len());
        for e in &r.parents {
            let parent = uid(self.types.get(&e.kind)?, &e.id);
            out.push(Entity::new_no_attrs(parent.clone(), HashSet::new()));
            parents.insert(parent);
        }
        out.push(Entity::new(uid(resource_type, &r.id), attrs, parents).ok()?);
        Some(out)
    }

    fn entities_json(&self, req: &PolicyRequest) -> Value {
        let p = &req.principal;
        let user = json!({"type": "User", "id": p.user});
        let group = |g: &String| json!({"type": "Group", "id": g});
        let mut agent_parents = vec![user.clone()];
        agent_parents.extend(p.agent_groups.iter().map(group));
        let mut entities = vec![
            json!({"uid": {"type": "Agent", "id": p.agent}, "attrs": {"user": {"__entity": user}}, "parents": agent_parents}),
            json!({"uid": user, "attrs": {}, "parents": p.groups.iter().map(group).collect::<Vec<_>>()}),
        ];
        let mut seen_groups: Vec<&String> = Vec::new();
        for g in p.groups.iter().chain(&p.agent_groups) {
            if !seen_groups.contains(&g) {
                seen_groups.push(g);
                entities.push(json!({"uid": group(g), "attrs": {}, "parents": []}));
            }
        }
        let r = &req.resource;
        let principal_side = (r.kind == "Agent" && r.id == p.agent)
            || (r.kind == "User" && r.id == p.user)
            || (r.kind == "Group" && seen_groups.contains(&&r.id));
        if !principal_side {
            let parents: Vec<Value> = r
                .parents
                .iter()
                .map(|e| json!({"type": e.kind, "id": e.id}))
                .collect();
            entities.push(json!({"uid": {"type": r.kind, "id": r.id}, "attrs": r.attributes, "parents": parents}));
            for parent in &r.parents {
                entities.push(json!({"uid": {"type": parent.kind, "id": parent.id}, "attrs": {}, "parents": []}));
            }
        }
        Value::Array(entities)
    }

    fn context_json(&self, c: &RequestContext) -> Value {
        let mut m = Map::with_capacity(6);
        m.insert("args".into(), decimals_as_extensions(&c.args));
        if let Some(grant) = &c.grant {
            m.insert("grant".into(), grant.clone());
        }
        m.insert("intent".into(), Value::String(c.intent.clone()));
        m.insert("time".into(), c.time.to_cedar_json());
        m.insert(
            "approval".into(),
            json!({"granted": c.approval.granted, "approvers": c.approval.approvers}),
        );
        if let Some(t) = &c.tool {
            m.insert(
                "tool".into(),
                json!({
                    "read_only": t.read_only,
                    "destructive": t.destructive,
                    "idempotent": t.idempotent,
                    "open_world": t.open_world,
                }),
            );
        }
        Value::Object(m)
    }
}

/// The plain reading of a JSON value as a Cedar value: no entity or extension escapes, integers
/// only. `None` when that reading does not exist.
fn plain_value(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_decimal(cedar_decimal(n).ok()?),
        },
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => RestrictedExpression::new_set(
            items.iter().map(plain_value).collect::<Option<Vec<_>>>()?,
        ),
        Value::Object(m) => {
            if m.contains_key("__entity") || m.contains_key("__extn") {
                return None;
            }
            let mut fields = Vec::with_capacity(m.len());
            for (k, v) in m {
                fields.push((k.clone(), plain_value(v)?));
            }
            RestrictedExpression::new_record(fields).ok()?
        }
        Value::Null => return None,
    })
}

/// The Cedar `decimal` text of a JSON number with a fraction (`2.5` → `"2.5"`), or why Cedar
/// cannot hold it: a decimal has one to four digits after the point and lies within
/// ±922337203685477.5807.
fn cedar_decimal(n: &serde_json::Number) -> Result<String, String> {
    let text = n.to_string();
    if cedar_decimal_text(&text) {
        Ok(text)
    } else {
        Err(format!(
            "{text} has a fraction, so policy reads it as a Cedar decimal, which holds at most \
             4 digits after the point within ±922337203685477.5807"
        ))
    }
}

/// Whether `text` is a Cedar `decimal` literal: digits, a point, one to four digits, in range.
fn cedar_decimal_text(text: &str) -> bool {
    let Some((whole, fraction)) = text.split_once('.') else {
        return false;
    };
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.len() <= 4
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && format!("{whole}{fraction:0<4}").parse::<i64>().is_ok()
}

/// Refuses, with the argument's JSON pointer, a number policy cannot read: a fraction that is not
/// a Cedar decimal, or an integer beyond Cedar's 64-bit `Long`.
fn check_numbers(v: &Value, at: &mut String) -> Result<(), RequestError> {
    match v {
        Value::Number(n) if n.as_i64().is_none() => {
            let why = if n.is_f64() {
                cedar_decimal(n).err()
            } else {
                Some(format!(
                    "{n} is beyond the range of a Cedar Long (64-bit signed integer)"
                ))
            };
            match why {
                Some(why) => Err(RequestError(format!(
                    "argument {}: {why}",
                    if at.is_empty() { "/" } else { at.as_str() }
                ))),
                None => Ok(()),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                check_numbers(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Object(m) => {
            for (k, item) in m {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                check_numbers(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn has_number(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::Array(items) => items.iter().any(has_number),
        Value::Object(m) => m.values().any(has_number),
        _ => false,
    }
}

/// `v` with every number (integers too, as `2.0`) written as a Cedar `decimal`, where it is one.
fn numbers_as_decimals(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let text = match n.as_i64() {
                Some(i) => format!("{i}.0"),
                None => n.to_string(),
            };
            if cedar_decimal_text(&text) {
                json!({"__extn": {"fn": "decimal", "arg": text}})
            } else {
                v.clone()
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_decimals).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_decimals(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn has_fraction(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_fraction),
        Value::Object(m) => m.values().any(has_fraction),
        _ => false,
    }
}

/// `v` with each number that has a fraction written as Cedar's JSON form of a `decimal`
/// (`{"__extn": {"fn": "decimal", "arg": "2.5"}}`), for the schema-guided parser.
fn decimals_as_extensions(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match cedar_decimal(n) {
            Ok(text) => json!({"__extn": {"fn": "decimal", "arg": text}}),
            Err(_) => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(decimals_as_extensions).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), decimals_as_extensions(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn plain_context(v: &Value) -> Option<Context> {
    let Value::Object(m) = v else { return None };
    let mut pairs = Vec::with_capacity(m.len());
    for (k, v) in m {
        pairs.push((k.clone(), plain_value(v)?));
    }
    Context::from_pairs(pairs).ok()
}

#[allow(clippy::expect_used)] // only called with constant identifiers; covered by every test
fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("a valid Cedar identifier")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_fractions_are_cedar_decimals_or_refused() {
        for (json, decimal) in [
            ("2.5", Some("2.5")),
            ("-0.25", Some("-0.25")),
            ("1.1234", Some("1.1234")),
            ("922337203685477.5", Some("922337203685477.5")),
            ("0.30000000000000004", None),
            ("1e300", None),
            ("9223372036854775.5", None),
        ] {
            let n: serde_json::Number = serde_json::from_str(json).unwrap();
            assert_eq!(cedar_decimal(&n).ok().as_deref(), decimal, "{json}");
        }
        let args = json!({"a": 2.5, "list": [1, {"b": 0.123456}]});
        let e = check_numbers(&args, &mut String::new()).unwrap_err();
        assert!(
            e.0.starts_with("argument /list/1/b: 0.123456 has a fraction"),
            "{e:?}"
        );
        assert!(check_numbers(&json!({"a": 2.5, "b": 7}), &mut String::new()).is_ok());
        let e = check_numbers(&json!({"n": u64::MAX}), &mut String::new()).unwrap_err();
        assert!(e.0.contains("Cedar Long"), "{e:?}");
        assert_eq!(
            decimals_as_extensions(&json!({"a": [2.5, 3]})),
            json!({"a": [{"__extn": {"fn": "decimal", "arg": "2.5"}}, 3]})
        );
    }

    #[test]
    fn time_reads_in_its_own_offset() {
        let t: RequestTime = "2026-05-03T23:30:00-02:00".parse().unwrap();
        // Sunday 23:30 at -02:00 is Monday 01:30 UTC; policies see the local facts.
        assert_eq!(t.hour(), 23);
        assert_eq!(t.weekday(), 7);
        let v = t.to_cedar_json();
        assert_eq!(v["minute"], 30);
        assert_eq!(v["unix"], 1_777_858_200i64);
    }

    #[test]
    fn time_serde_round_trips_and_accepts_unix_seconds() {
        let t: RequestTime = serde_json::from_str("\"2026-05-04T10:00:00Z\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-05-04T10:00:00Z\""
        );
        let u: RequestTime = serde_json::from_str("1777888800").unwrap();
        assert_eq!(t, u);
        assert!(serde_json::from_str::<RequestTime>("\"monday\"").is_err());
    }
}
