//! Merkle tree structure per RFC 9162 §2.1: roots of any size, proofs as plans over stored
//! perfect subtrees, the frontier a single writer keeps, and an in-memory reference tree.
//!
//! Every hash a proof needs is the hash of a range of leaves `[a, b)`. Such a range always splits
//! into O(log n) *perfect* subtrees (`NodeId`s), and a perfect subtree's hash never changes once
//! its last leaf is appended. A store therefore keeps exactly those hashes and answers any root or
//! proof from O(log n) lookups, without rescanning the log. [`ProofPlan`] names the nodes to look up
//! and how to combine them.

use crate::{AuditError, Hash, empty_root, node_hash};

/// A perfect subtree: the `2^level` leaves starting at `index * 2^level`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    /// The first leaf the subtree covers.
    pub fn first_leaf(&self) -> u64 {
        self.index << self.level
    }

    /// One past the last leaf the subtree covers.
    pub fn end_leaf(&self) -> u64 {
        (self.index + 1) << self.level
    }
}

/// Splits the leaf range `[start, end)` into perfect subtrees, left to right.
fn range_nodes(mut start: u64, end: u64, out: &mut Vec<NodeId>) {
    while start < end {
        let align = if start == 0 {
            63
        } else {
            start.trailing_zeros()
        };
        let fit = 63 - (end - start).leading_zeros();
        let level = align.min(fit);
        out.push(NodeId {
            level: level as u8,
            index: start >> level,
        });
        start += 1u64 << level;
    }
}

/// The largest power of two strictly below `n` (n ≥ 2): RFC 9162's split point `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Which stored subtree hashes make up each hash of a root or proof.
///
/// Each element of a proof is the hash of a leaf range; the plan lists, for every element, the
/// perfect subtrees of that range from left to right. The element's hash is the right fold
/// `node_hash(s1, node_hash(s2, … sk))`, which is how RFC 9162 hashes a range whose size is not a
/// power of two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    elements: Vec<Vec<NodeId>>,
}

impl ProofPlan {
    /// Every node the plan reads, sorted and without repeats.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.elements.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// How many hashes the plan yields.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Computes the plan's hashes from a node lookup; a missing node is an error, never a guess.
    pub fn assemble(
        &self,
        lookup: impl Fn(NodeId) -> Option<Hash>,
    ) -> Result<Vec<Hash>, AuditError> {
        let get = |id: NodeId| lookup(id).ok_or(AuditError::MissingNode(id));
        self.elements
            .iter()
            .map(|nodes| {
                let (last, rest) = nodes
                    .split_last()
                    .ok_or_else(|| AuditError::InvalidRequest("empty proof element".into()))?;
                let mut hash = get(*last)?;
                for id in rest.iter().rev() {
                    hash = node_hash(&get(*id)?, &hash);
                }
                Ok(hash)
            })
            .collect()
    }

    fn push_range(&mut self, start: u64, end: u64) {
        let mut nodes = Vec::new();
        range_nodes(start, end, &mut nodes);
        self.elements.push(nodes);
    }
}

/// The plan for the root of the first `size` leaves: one element (none for the empty tree, whose
/// root is [`empty_root`]).
pub fn root_plan(size: u64) -> ProofPlan {
    let mut plan = ProofPlan {
        elements: Vec::new(),
    };
    if size > 0 {
        plan.push_range(0, size);
    }
    plan
}

/// The plan for the inclusion proof of leaf `index` in the tree of `size` leaves
/// (RFC 9162 §2.1.3.1), ordered from the leaf's sibling up to the root's child.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, AuditError> {
    if index >= size {
        return Err(AuditError::InvalidRequest(format!(
            "leaf {index} is not in a tree of {size} entries"
        )));
    }
    let mut plan = ProofPlan {
        elements: Vec::new(),
    };
    path(index, 0, size, &mut plan);
    Ok(plan)
}

fn path(index: u64, lo: u64, hi: u64, plan: &mut ProofPlan) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < lo + k {
        path(index, lo, lo + k, plan);
        plan.push_range(lo + k, hi);
    } else {
        path(index, lo + k, hi, plan);
        plan.push_range(lo, lo + k);
    }
}

/// The plan for the consistency proof from the tree of `old` leaves to the tree of `new` leaves
/// (RFC 9162 §2.1.4.1). Empty when `old` is 0 or equals `new`.
pub fn consistency_plan(old: u64, new: u64) -> Result<ProofPlan, AuditError> {
    if old > new {
        return Err(AuditError::InvalidRequest(format!(
            "a tree of {old} entries cannot be a prefix of one of {new}"
        )));
    }
    let mut plan = ProofPlan {
        elements: Vec::new(),
    };
    if old > 0 && old < new {
        subproof(old, 0, new, true, &mut plan);
    }
    Ok(plan)
}

fn subproof(m: u64, lo: u64, hi: u64, have_root: bool, plan: &mut ProofPlan) {
    if lo + m == hi {
        if !have_root {
            plan.push_range(lo, hi);
        }
        return;
    }
    let k = split_point(hi - lo);
    if m <= k {
        subproof(m, lo, lo + k, have_root, plan);
        plan.push_range(lo + k, hi);
    } else {
        subproof(m - k, lo + k, hi, false, plan);
        plan.push_range(lo, lo + k);
    }
}

/// The right edge of the tree: one hash per set bit of its size, largest subtree first.
///
/// This is all a single writer needs to append leaves, emit the perfect subtrees each append
/// completes, and compute the current root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The nodes a frontier of `size` leaves consists of, in order.
    pub fn nodes_for_size(size: u64) -> Vec<NodeId> {
        let mut ids = Vec::with_capacity(size.count_ones() as usize);
        range_nodes(0, size, &mut ids);
        ids
    }

    /// Rebuilds a frontier from the hashes of [`Frontier::nodes_for_size`], in the same order.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Result<Frontier, AuditError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(AuditError::InvalidRequest(format!(
                "a tree of {size} entries has {} frontier nodes, {} were given",
                size.count_ones(),
                nodes.len()
            )));
        }
        Ok(Frontier { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier's hashes, largest subtree first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let Some((last, rest)) = self.nodes.split_last() else {
            return empty_root();
        };
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Appends a leaf hash and reports every perfect subtree it completes, the leaf itself
    /// (level 0) first, to `emit`.
    pub fn append_with(&mut self, leaf: Hash, mut emit: impl FnMut(NodeId, Hash)) {
        let mut index = self.size;
        let mut level = 0u8;
        let mut hash = leaf;
        emit(NodeId { level, index }, hash);
        while index & 1 == 1 {
            // The rightmost frontier node is the left sibling of the subtree just completed.
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            emit(NodeId { level, index }, hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// [`Frontier::append_with`], collecting the completed subtrees.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut out = Vec::with_capacity(1 + self.size.trailing_ones() as usize);
        self.append_with(leaf, |id, hash| out.push((id, hash)));
        out
    }
}

/// A whole tree in memory: every perfect subtree, by level. The reference the stores are tested
/// against, and the way to compute proofs over a log held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let row = &self.levels[level];
            let hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(hash);
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The hash of a perfect subtree, if it is complete.
    pub fn node(&self, id: NodeId) -> Option<Hash> {
        let index = usize::try_from(id.index).ok()?;
        self.levels.get(usize::from(id.level))?.get(index).copied()
    }

    fn check(&self, size: u64) -> Result<(), AuditError> {
        if size > self.size() {
            return Err(AuditError::InvalidRequest(format!(
                "the tree has {} entries, not {size}",
                self.size()
            )));
        }
        Ok(())
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, AuditError> {
        self.check(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        let hashes = root_plan(size).assemble(|id| self.node(id))?;
        hashes
            .first()
            .copied()
            .ok_or(AuditError::InvalidRequest("no root".into()))
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check(size)?;
        inclusion_plan(index, size)?.assemble(|id| self.node(id))
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        self.check(new)?;
        consistency_plan(old, new)?.assemble(|id| self.node(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_perfect_subtrees() {
        let mut out = Vec::new();
        range_nodes(0, 7, &mut out);
        assert_eq!(
            out,
            vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        out.clear();
        range_nodes(4, 7, &mut out);
        assert_eq!(out, vec![NodeId::new(1, 2), NodeId::new(0, 6)]);
        out.clear();
        range_nodes(8, 16, &mut out);
        assert_eq!(out, vec![NodeId::new(3, 1)]);
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(28937), 16384);
    }

    #[test]
    fn frontier_matches_nodes_for_size() {
        let mut f = Frontier::new();
        for i in 0..100u64 {
            f.append(crate::leaf_hash(&i.to_be_bytes()));
            assert_eq!(f.nodes().len(), Frontier::nodes_for_size(f.size()).len());
        }
    }
}
