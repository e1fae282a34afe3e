//! Slicing: evaluate only the policies that can apply to a request, with the same answer as
//! evaluating them all.
//!
//! Cedar's authorizer evaluates every policy of the set it is given. Its answer depends only on
//! which permits and which forbids are satisfied (and which error), so a policy set can be split
//! into parts, each part evaluated on its own, and the parts' answers combined exactly: the
//! satisfied forbids are the union of the parts' satisfied forbids, and so on. A policy whose scope
//! cannot match the request is never satisfied and never errors (the scope is checked first and
//! `&&` short-circuits), so leaving it out changes nothing.
//!
//! The index has two levels, each keyed only on what is provably decisive:
//!
//! 1. **Action.** For every action the schema declares, the policies whose action scope can match
//!    it: unconstrained (`action`), `action == A`, or `action in [..]` listing the action or one of
//!    its ancestor action groups in the schema. Requests carry the schema's action hierarchy (Writ
//!    builds their entities with the schema), so this is exact. An action the index does not know
//!    is evaluated against the whole set.
//! 2. **Principal scope,** within an action's slice: `principal` (any) is always evaluated;
//!    `principal is T` only when the principal's type is `T`; `principal == E`, `principal in E`
//!    and `principal is T in E` only when `E` is the principal itself or one of its ancestors in the
//!    request's own entities, which is exactly the set of `E` for which Cedar's `in` can hold.
//!    Template-linked policies are indexed by their linked values, like static ones.

// Cedar's own `PolicySetError` is large; it is returned as Cedar gives it, once per bundle load.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Decision, Effect, Entities, EntityTypeName,
    EntityUid, Policy, PolicyId, PolicySet, PolicySetError, PrincipalConstraint, Request, Schema,
};

/// A policy set indexed by action and principal scope. Evaluates like the whole set, faster.
#[derive(Debug)]
pub struct SlicedPolicySet {
    by_action: HashMap<EntityUid, ActionSlice>,
    /// The whole set, for requests whose action the index does not know.
    whole: Part,
    authorizer: Authorizer,
    /// Unions of the parts a request needs, built on first use, so that a request whose
    /// principal matches several parts still costs one Cedar evaluation (each call of the
    /// authorizer has a fixed cost that dominates small slices). Keyed by action and the part
    /// indices; bounded by [`MERGED_CAPACITY`], beyond which parts are evaluated one by one.
    merged: RwLock<HashMap<MergedKey, Arc<Part>>>,
    merge_capacity: usize,
}

/// An action's dense index and the sorted indices of its parts a request needs.
type MergedKey = (usize, Vec<usize>);

/// How many distinct part combinations are kept merged. Each holds at most one action's slice.
const MERGED_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct ActionSlice {
    /// Dense index of the action, for the merged-part cache key.
    index: usize,
    parts: Vec<Part>,
    any_principal: Option<usize>,
    by_type: HashMap<EntityTypeName, usize>,
    by_entity: HashMap<EntityUid, usize>,
    policies: usize,
}

impl ActionSlice {
    fn part_for(&mut self, key: PartKey) -> &mut Part {
        let slot = match key {
            PartKey::Any => &mut self.any_principal,
            PartKey::Type(t) => {
                let next = self.parts.len();
                let i = *self.by_type.entry(t).or_insert(next);
                if i == next {
                    self.parts.push(Part::new());
                }
                return &mut self.parts[i];
            }
            PartKey::Entity(e) => {
                let next = self.parts.len();
                let i = *self.by_entity.entry(e).or_insert(next);
                if i == next {
                    self.parts.push(Part::new());
                }
                return &mut self.parts[i];
            }
        };
        let i = *slot.get_or_insert(self.parts.len());
        if i == self.parts.len() {
            self.parts.push(Part::new());
        }
        &mut self.parts[i]
    }
}

enum PartKey {
    Any,
    Type(EntityTypeName),
    Entity(EntityUid),
}

/// Policies evaluated together: all of them, and the permits alone (to learn, when gates deny,
/// whether any permit would allow).
#[derive(Debug)]
struct Part {
    all: PolicySet,
    permits: PolicySet,
}

impl Part {
    fn new() -> Self {
        Self {
            all: PolicySet::new(),
            permits: PolicySet::new(),
        }
    }

    fn add(&mut self, policy: &Policy, source: &PolicySet) -> Result<(), PolicySetError> {
        add_policy(&mut self.all, policy, source)?;
        if policy.effect() == Effect::Permit {
            add_policy(&mut self.permits, policy, source)?;
        }
        Ok(())
    }

    fn from_set(set: &PolicySet) -> Result<Self, PolicySetError> {
        let mut part = Self::new();
        for p in set.policies() {
            part.add(p, set)?;
        }
        Ok(part)
    }
}

/// Adds a static or template-linked policy to `set`, bringing its template along.
fn add_policy(
    set: &mut PolicySet,
    policy: &Policy,
    source: &PolicySet,
) -> Result<(), PolicySetError> {
    match (policy.template_id(), policy.template_links()) {
        (Some(template_id), Some(links)) => {
            if set.template(template_id).is_none()
                && let Some(t) = source.template(template_id)
            {
                set.add_template(t.clone())?;
            }
            set.link(template_id.clone(), policy.id().clone(), links)
        }
        _ => set.add(policy.clone()),
    }
}

/// What the satisfied policies of one evaluation were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// Satisfied forbids. If any, the decision is Deny.
    pub forbids: Vec<PolicyId>,
    /// Satisfied permits, as far as Cedar reports them: only when no forbid was satisfied in the
    /// same part (use [`SlicedPolicySet::satisfied_permits`] when you need them all).
    pub permits: Vec<PolicyId>,
    /// Policies that failed to evaluate, with the error.
    pub errors: Vec<(PolicyId, String)>,
}

impl Authorization {
    /// Cedar's decision: any satisfied forbid denies; otherwise any satisfied permit allows.
    pub fn decision(&self) -> Decision {
        if self.forbids.is_empty() && !self.permits.is_empty() {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    /// Cedar's `reason`: the satisfied forbids for a Deny, the satisfied permits for an Allow.
    pub fn determining(&self) -> &[PolicyId] {
        if self.forbids.is_empty() {
            &self.permits
        } else {
            &self.forbids
        }
    }

    fn absorb(&mut self, response: &cedar_policy::Response) {
        for e in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(e) = e;
            self.errors.push((e.policy_id().clone(), e.to_string()));
        }
        let reasons = response.diagnostics().reason().cloned();
        match response.decision() {
            Decision::Deny => self.forbids.extend(reasons),
            Decision::Allow => self.permits.extend(reasons),
        }
    }
}

/// Sizes of the slices, for `writ policy validate` and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SliceStats {
    pub policies: usize,
    pub actions: usize,
    pub largest_action_slice: usize,
    pub mean_action_slice: f64,
}

impl SlicedPolicySet {
    /// Indexes `policies` by the actions of `schema` and by principal scope.
    pub fn new(policies: &PolicySet, schema: &Schema) -> Result<Self, PolicySetError> {
        let action_entities = schema.action_entities().ok();
        let mut hierarchy: Vec<(EntityUid, HashSet<EntityUid>)> = Vec::new();
        for action in schema.actions() {
            let ancestors = action_entities
                .as_ref()
                .and_then(|e| e.ancestors(action))
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            hierarchy.push((action.clone(), ancestors));
        }
        let mut by_action = HashMap::with_capacity(hierarchy.len());
        for (index, (action, ancestors)) in hierarchy.iter().enumerate() {
            let mut slice = ActionSlice {
                index,
                ..ActionSlice::default()
            };
            for policy in policies.policies() {
                if !action_can_match(&policy.action_constraint(), action, ancestors) {
                    continue;
                }
                slice.policies += 1;
                let key = match policy.principal_constraint() {
                    PrincipalConstraint::Any => PartKey::Any,
                    PrincipalConstraint::Is(t) => PartKey::Type(t),
                    PrincipalConstraint::Eq(e)
                    | PrincipalConstraint::In(e)
                    | PrincipalConstraint::IsIn(_, e) => PartKey::Entity(e),
                };
                slice.part_for(key).add(policy, policies)?;
            }
            by_action.insert(action.clone(), slice);
        }
        Ok(Self {
            by_action,
            whole: Part::from_set(policies)?,
            authorizer: Authorizer::new(),
            merged: RwLock::new(HashMap::new()),
            merge_capacity: MERGED_CAPACITY,
        })
    }

    /// No index: every request evaluates the whole set. The reference the sliced form must equal.
    pub fn unsliced(policies: &PolicySet) -> Result<Self, PolicySetError> {
        Ok(Self {
            by_action: HashMap::new(),
            whole: Part::from_set(policies)?,
            authorizer: Authorizer::new(),
            merged: RwLock::new(HashMap::new()),
            merge_capacity: MERGED_CAPACITY,
        })
    }

    /// Never merges parts: each part a request needs is evaluated on its own (what happens once
    /// the cache of merged parts is full). For tests and measurements.
    pub fn without_merging(mut self) -> Self {
        self.merge_capacity = 0;
        self
    }

    /// The parts that can apply to `request`: one merged part when possible, else each of them.
    fn parts(&self, request: &Request, entities: &Entities) -> Parts<'_> {
        let (slice, principal) = match (
            request.action().and_then(|a| self.by_action.get(a)),
            request.principal(),
        ) {
            (Some(slice), Some(principal)) => (slice, principal),
            _ => return Parts::One(&self.whole),
        };
        let mut indices = Vec::with_capacity(4);
        indices.extend(slice.any_principal);
        if !slice.by_type.is_empty() {
            indices.extend(slice.by_type.get(principal.type_name()));
        }
        if !slice.by_entity.is_empty() {
            indices.extend(slice.by_entity.get(principal));
            if let Some(ancestors) = entities.ancestors(principal) {
                indices.extend(ancestors.filter_map(|a| slice.by_entity.get(a)));
            }
        }
        match indices.as_slice() {
            [] => Parts::None,
            [one] => Parts::One(&slice.parts[*one]),
            _ => {
                indices.sort_unstable();
                indices.dedup();
                match self.merged_part(slice, indices.clone()) {
                    Some(part) => Parts::Merged(part),
                    None => Parts::Each(indices.iter().map(|&i| &slice.parts[i]).collect()),
                }
            }
        }
    }

    /// The union of `slice`'s parts at `indices`, from the cache or built now. `None` when the
    /// cache is full (or a lock was poisoned): the caller evaluates the parts one by one.
    fn merged_part(&self, slice: &ActionSlice, indices: Vec<usize>) -> Option<Arc<Part>> {
        let key = (slice.index, indices);
        if let Some(part) = self.merged.read().ok()?.get(&key) {
            return Some(Arc::clone(part));
        }
        let mut merged = Part::new();
        for &i in &key.1 {
            for policy in slice.parts[i].all.policies() {
                merged.add(policy, &slice.parts[i].all).ok()?;
            }
        }
        let part = Arc::new(merged);
        let mut cache = self.merged.write().ok()?;
        if cache.len() >= self.merge_capacity {
            return None;
        }
        Some(Arc::clone(cache.entry(key).or_insert(part)))
    }

    /// Evaluates the policies that can apply to `request`.
    pub fn authorize(&self, request: &Request, entities: &Entities) -> Authorization {
        let mut out = Authorization::default();
        for part in self.parts(request, entities).iter() {
            out.absorb(&self.authorizer.is_authorized(request, &part.all, entities));
        }
        if !out.forbids.is_empty() {
            // Permits reported by parts without a satisfied forbid are not the whole story; keep
            // the fields consistent with Cedar's response (forbids only on Deny).
            out.permits.clear();
        }
        out
    }

    /// The permits satisfied by `request`, whatever the forbids say.
    pub fn satisfied_permits(&self, request: &Request, entities: &Entities) -> Vec<PolicyId> {
        let mut out = Authorization::default();
        for part in self.parts(request, entities).iter() {
            if !part.permits.is_empty() {
                out.absorb(
                    &self
                        .authorizer
                        .is_authorized(request, &part.permits, entities),
                );
            }
        }
        out.permits
    }

    pub fn stats(&self) -> SliceStats {
        let sizes: Vec<usize> = self.by_action.values().map(|s| s.policies).collect();
        SliceStats {
            policies: self.whole.all.policies().count(),
            actions: sizes.len(),
            largest_action_slice: sizes.iter().copied().max().unwrap_or(0),
            mean_action_slice: if sizes.is_empty() {
                0.0
            } else {
                sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
            },
        }
    }
}

/// The parts one request evaluates.
enum Parts<'a> {
    None,
    One(&'a Part),
    Merged(Arc<Part>),
    Each(Vec<&'a Part>),
}

impl Parts<'_> {
    fn iter(&self) -> impl Iterator<Item = &Part> {
        let (single, each): (Option<&Part>, &[&Part]) = match self {
            Self::None => (None, &[]),
            Self::One(p) => (Some(*p), &[]),
            Self::Merged(p) => (Some(p.as_ref()), &[]),
            Self::Each(parts) => (None, parts.as_slice()),
        };
        single.into_iter().chain(each.iter().copied())
    }
}

fn action_can_match(
    constraint: &ActionConstraint,
    action: &EntityUid,
    ancestors: &HashSet<EntityUid>,
) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || ancestors.contains(a)),
    }
}
