//! Hot paths of the log: hashing a leaf, appending to the frontier, planning and verifying proofs.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use writ_audit::{Frontier, MemoryTree, leaf_hash, verify_inclusion};

fn bench(c: &mut Criterion) {
    let entry = vec![b'x'; 400];
    c.bench_function("leaf_hash/400B", |b| {
        b.iter(|| leaf_hash(black_box(&entry)))
    });

    let leaf = leaf_hash(&entry);
    c.bench_function("frontier/append", |b| {
        let mut f = Frontier::new();
        b.iter(|| {
            let mut n = 0;
            f.append_with(black_box(leaf), |_, _| n += 1);
            n
        })
    });

    let size = 1 << 20;
    let mut tree = MemoryTree::new();
    for i in 0..size {
        tree.push(leaf_hash(&u64::to_be_bytes(i)));
    }
    let root = tree.root(size).unwrap_or_default();
    let index = 777_777;
    let proof = tree.inclusion_proof(index, size).unwrap_or_default();
    let l = leaf_hash(&u64::to_be_bytes(index));
    c.bench_function("inclusion/plan/1M", |b| {
        b.iter(|| writ_audit::inclusion_plan(black_box(index), size).map(|p| p.len()))
    });
    c.bench_function("inclusion/verify/1M", |b| {
        b.iter(|| verify_inclusion(black_box(&l), index, size, &proof, &root).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
