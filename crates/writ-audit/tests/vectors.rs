//! The RFC 6962 reference vectors the Certificate Transparency / transparency-dev Merkle libraries
//! test against (leaf inputs, every complete subtree, every root, and their reference proofs),
//! then property tests over every m ≤ n.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use writ_audit::{
    Frontier, Hash, MemoryTree, NodeId, ProofError, consistency_plan, empty_root, inclusion_plan,
    leaf_hash, root_plan, verify_consistency, verify_inclusion,
};

fn h(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap()
}

fn leaf_inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| hex::decode(x).unwrap())
    .collect()
}

fn node_hashes() -> Vec<Vec<Hash>> {
    vec![
        vec![
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
            h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
        ],
        vec![
            h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        ],
        vec![
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
        vec![h(
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        )],
    ]
}

fn root_hashes() -> Vec<Hash> {
    vec![
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
        h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
        h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ]
}

fn reference_tree() -> MemoryTree {
    let mut tree = MemoryTree::new();
    for input in leaf_inputs() {
        tree.push(leaf_hash(&input));
    }
    tree
}

#[test]
fn every_subtree_and_root_matches_the_reference() {
    let tree = reference_tree();
    for (level, row) in node_hashes().iter().enumerate() {
        for (index, want) in row.iter().enumerate() {
            assert_eq!(
                tree.node(NodeId::new(level as u8, index as u64)),
                Some(*want),
                "node {level}/{index}"
            );
        }
    }
    assert_eq!(root_hashes()[0], empty_root());
    let mut frontier = Frontier::new();
    for (size, want) in root_hashes().iter().enumerate() {
        assert_eq!(tree.root(size as u64).unwrap(), *want, "root of {size}");
        assert_eq!(frontier.root(), *want, "frontier root of {size}");
        if size < 8 {
            frontier.append(leaf_hash(&leaf_inputs()[size]));
        }
    }
}

#[test]
fn reference_inclusion_proofs() {
    let tree = reference_tree();
    let cases: Vec<(u64, u64, Vec<&str>)> = vec![
        (0, 1, vec![]),
        (
            0,
            2,
            vec!["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            vec!["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            2,
            3,
            vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            vec![
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            0,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            vec![
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, size, want) in cases {
        let want: Vec<Hash> = want.into_iter().map(h).collect();
        let proof = tree.inclusion_proof(index, size).unwrap();
        assert_eq!(proof, want, "inclusion {index} in {size}");
        let leaf = leaf_hash(&leaf_inputs()[index as usize]);
        verify_inclusion(&leaf, index, size, &proof, &root_hashes()[size as usize]).unwrap();
    }
}

#[test]
fn reference_consistency_proofs() {
    let tree = reference_tree();
    let cases: Vec<(u64, u64, Vec<&str>)> = vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            5,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            8,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    let roots = root_hashes();
    for (old, new, want) in cases {
        let want: Vec<Hash> = want.into_iter().map(h).collect();
        let proof = tree.consistency_proof(old, new).unwrap();
        assert_eq!(proof, want, "consistency {old} → {new}");
        verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &proof).unwrap();
    }
}

#[test]
fn bad_requests_are_errors() {
    let tree = reference_tree();
    assert!(inclusion_plan(3, 3).is_err());
    assert!(consistency_plan(4, 3).is_err());
    assert!(tree.root(9).is_err());
    assert!(tree.inclusion_proof(0, 9).is_err());
    assert!(root_plan(0).is_empty());
    let r = root_hashes();
    assert_eq!(
        verify_inclusion(&r[1], 3, 3, &[], &r[3]),
        Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
    );
    assert_eq!(
        verify_consistency(4, 3, &r[4], &r[3], &[]),
        Err(ProofError::SizesOutOfOrder { old: 4, new: 3 })
    );
    assert_eq!(
        verify_consistency(3, 5, &r[3], &r[5], &[]),
        Err(ProofError::Empty)
    );
    assert_eq!(
        verify_consistency(0, 5, &r[0], &r[5], &[r[1]]),
        Err(ProofError::NotEmpty)
    );
    assert_eq!(
        verify_consistency(5, 5, &r[5], &r[4], &[]),
        Err(ProofError::RootMismatch)
    );
    verify_consistency(0, 5, &r[0], &r[5], &[]).unwrap();
}

/// A tree of `n` distinct leaves.
fn tree_of(n: u64) -> (MemoryTree, Vec<Hash>) {
    let mut tree = MemoryTree::new();
    let leaves: Vec<Hash> = (0..n)
        .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
        .collect();
    for l in &leaves {
        tree.push(*l);
    }
    (tree, leaves)
}

/// A naive recursive root straight from RFC 9162's definition, independent of the plans.
fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            writ_audit::node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

#[test]
fn every_proof_for_every_m_le_n_up_to_64_verifies() {
    let (tree, leaves) = tree_of(64);
    for n in 0..=64u64 {
        let root = tree.root(n).unwrap();
        assert_eq!(root, naive_root(&leaves[..n as usize]), "root of {n}");
        for m in 0..n {
            let proof = tree.inclusion_proof(m, n).unwrap();
            verify_inclusion(&leaves[m as usize], m, n, &proof, &root).unwrap();
        }
        for m in 0..=n {
            let proof = tree.consistency_proof(m, n).unwrap();
            verify_consistency(m, n, &tree.root(m).unwrap(), &root, &proof).unwrap();
        }
    }
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out.0[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inclusion_fails_on_any_flip_or_wrong_index(n in 1u64..300, m_seed: u64, which: usize, bit in 0usize..256) {
        let (tree, leaves) = tree_of(n);
        let m = m_seed % n;
        let root = tree.root(n).unwrap();
        let proof = tree.inclusion_proof(m, n).unwrap();
        prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &proof, &root).is_ok());
        // A flipped bit in the leaf, the root or any proof hash.
        prop_assert!(verify_inclusion(&flip(&leaves[m as usize], bit), m, n, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &proof, &flip(&root, bit)).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &bad, &root).is_err());
            // A dropped or an extra hash.
            prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &proof[..proof.len() - 1], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(&leaves[m as usize], m, n, &longer, &root).is_err());
        // Any other index. (A different size with the same root is not something a proof can
        // rule out: the size is bound to the root by the signed checkpoint, not by the proof.)
        for other in 0..n.min(40) {
            if other != m {
                prop_assert!(verify_inclusion(&leaves[m as usize], other, n, &proof, &root).is_err());
            }
        }
    }

    #[test]
    fn consistency_fails_on_any_flip(n in 2u64..300, m_seed: u64, which: usize, bit in 0usize..256) {
        let (tree, _) = tree_of(n);
        let m = 1 + m_seed % (n - 1);
        let (old_root, new_root) = (tree.root(m).unwrap(), tree.root(n).unwrap());
        let proof = tree.consistency_proof(m, n).unwrap();
        prop_assert!(verify_consistency(m, n, &old_root, &new_root, &proof).is_ok());
        prop_assert!(verify_consistency(m, n, &flip(&old_root, bit), &new_root, &proof).is_err());
        prop_assert!(verify_consistency(m, n, &old_root, &flip(&new_root, bit), &proof).is_err());
        let mut bad = proof.clone();
        let i = which % bad.len();
        bad[i] = flip(&bad[i], bit);
        prop_assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
        prop_assert!(verify_consistency(m, n, &old_root, &new_root, &proof[..proof.len() - 1]).is_err());
        // The proof does not serve other sizes.
        if m + 1 < n {
            prop_assert!(verify_consistency(m + 1, n, &tree.root(m + 1).unwrap(), &new_root, &proof).is_err());
        }
    }

    #[test]
    fn frontier_and_rebuilt_frontier_agree(n in 0u64..2000) {
        let (tree, leaves) = tree_of(n);
        let mut frontier = Frontier::new();
        let mut emitted = 0u64;
        for l in &leaves {
            for (id, hash) in frontier.append(*l) {
                prop_assert_eq!(tree.node(id), Some(hash));
                emitted += 1;
            }
        }
        // Every perfect subtree is emitted exactly once: n leaves and n - popcount(n) interior nodes.
        prop_assert_eq!(emitted, 2 * n - u64::from(n.count_ones()));
        prop_assert_eq!(frontier.root(), tree.root(n).unwrap());
        let ids = Frontier::nodes_for_size(n);
        let hashes: Vec<Hash> = ids.iter().map(|id| tree.node(*id).unwrap()).collect();
        let rebuilt = Frontier::from_nodes(n, hashes).unwrap();
        prop_assert_eq!(&rebuilt, &frontier);
        prop_assert!(Frontier::from_nodes(n, vec![]).is_err() || n == 0);
    }
}
