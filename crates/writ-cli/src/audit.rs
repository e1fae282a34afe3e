//! `writ audit …`: append to, sign, prove, verify, query and export the audit log.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_audit::{Checkpoint, Hash};
use writ_core::{EntryKind, NewEntry, Timestamp};
use writ_gateway::assemble::keys;
use writ_store::{EntryFilter, Store, StoredCheckpoint, StoredEntry, VerifyOptions};

use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Record one governed action's full record (request → policy → approval → execution →
    /// response), sign a checkpoint, prove every entry's inclusion and verify the whole log.
    Demo,
    /// Append entries read as JSON Lines from standard input, all or nothing.
    ///
    /// Each line: {"action_id": "...", "kind": "requested|evaluated|approval_requested|
    /// approval_decided|executed|responded|admin", "payload": ..., "actor": "..." (optional)}.
    Append,
    /// Sign the current tree head as a C2SP checkpoint, store it and print the signed note.
    Checkpoint,
    /// Print inclusion and consistency proofs.
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Recompute the whole log and check every stored hash, column and checkpoint.
    Verify {
        /// A checkpoint (signed note file) obtained earlier, outside this database. Detects
        /// rollbacks and rewritten history.
        #[arg(long, value_name = "FILE")]
        trusted_checkpoint: Option<std::path::PathBuf>,
        /// The verifier key (file or key text). Default: log.pub in the data directory.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Find entries by action, kind, actor and time.
    Query {
        #[arg(long)]
        action_id: Option<String>,
        #[arg(long)]
        kind: Option<EntryKind>,
        #[arg(long)]
        actor: Option<String>,
        /// Entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<Timestamp>,
        /// Entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<Timestamp>,
        /// Entries after this sequence number (for paging).
        #[arg(long)]
        after_seq: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Write every entry to standard output: canonical JSON Lines, or OCSF API Activity events.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// One entry per line, exactly its canonical bytes (the Merkle leaf data).
    Jsonl,
    /// OCSF 1.x API Activity (class 6003) events, one per line, for SIEMs.
    Ocsf,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProofCommand {
    /// Prove that entry SEQ is in the tree of SIZE entries (default: the current size).
    Inclusion {
        #[arg(long)]
        seq: u64,
        #[arg(long)]
        size: Option<u64>,
    },
    /// Prove that the tree of FROM entries is a prefix of the tree of TO entries.
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
}

pub async fn run(cmd: AuditCommand, global: &Global) -> anyhow::Result<ExitCode> {
    let store = crate::open_store(global).await?;
    match cmd {
        AuditCommand::Demo => demo(store, global).await,
        AuditCommand::Append => append(store, global).await,
        AuditCommand::Checkpoint => checkpoint(store, global).await,
        AuditCommand::Proof(p) => proof(store, p, global).await,
        AuditCommand::Verify {
            trusted_checkpoint,
            key,
        } => verify(store, trusted_checkpoint, key, global).await,
        AuditCommand::Query {
            action_id,
            kind,
            actor,
            since,
            until,
            after_seq,
            limit,
        } => {
            let filter = EntryFilter {
                action_id,
                kind,
                actor,
                since,
                until,
                after_seq,
                limit,
            };
            query(store, filter, global).await
        }
        AuditCommand::Export { format } => export(store, format).await,
    }
}

async fn append(store: Arc<dyn Store>, global: &Global) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut entries = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.with_context(|| format!("reading line {} of standard input", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = NewEntry::from_json(&line)
            .with_context(|| format!("line {}: nothing was appended", i + 1))?;
        entries.push(entry);
    }
    if entries.is_empty() {
        bail!("no entries on standard input; nothing was appended");
    }
    let receipts = store.append(entries).await?;
    let (first, last) = match (receipts.first(), receipts.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => bail!("the store returned no receipts"),
    };
    if global.json {
        println!(
            "{}",
            json!({"appended": receipts.len(), "first_seq": first, "last_seq": last, "size": last + 1})
        );
    } else {
        println!(
            "appended {} entries (seq {first}..={last}); the log has {} entries",
            receipts.len(),
            last + 1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Signs and stores a checkpoint of the current tree head; returns the signed note.
pub async fn sign_checkpoint(
    store: &dyn Store,
    global: &Global,
) -> anyhow::Result<(Checkpoint, String)> {
    let signer = keys::load_signer(&global.data_dir)?;
    let head = store.tree_head().await?;
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size: head.size,
        root: head.root,
        extensions: Vec::new(),
    };
    let note = writ_audit::sign_checkpoint(&checkpoint, &signer)?;
    store
        .add_checkpoint(StoredCheckpoint {
            tree_size: head.size,
            root_hash: head.root,
            note: note.clone(),
            created_us: Timestamp::now().as_micros(),
        })
        .await?;
    Ok((checkpoint, note))
}

async fn checkpoint(store: Arc<dyn Store>, global: &Global) -> anyhow::Result<ExitCode> {
    let (cp, note) = sign_checkpoint(store.as_ref(), global).await?;
    if global.json {
        println!(
            "{}",
            json!({"origin": cp.origin, "size": cp.size, "root_hash": cp.root.to_base64(), "note": note})
        );
    } else {
        print!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn hashes_hex(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_hex).collect()
}

async fn proof(
    store: Arc<dyn Store>,
    cmd: ProofCommand,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ProofCommand::Inclusion { seq, size } => {
            let size = match size {
                Some(s) => s,
                None => store.size().await?,
            };
            let proof = store.inclusion_proof(seq, size).await?;
            let root = store.root_at(size).await?;
            let leaf = match store.entries(seq, 1).await?.into_iter().next() {
                Some(e) if e.seq == seq => e.leaf_hash,
                _ => bail!("entry {seq} is not in the log"),
            };
            // Never hand out a proof that does not verify.
            writ_audit::verify_inclusion(&leaf, seq, size, &proof, &root)
                .context("the store produced an inclusion proof that does not verify; run `writ audit verify`")?;
            if global.json {
                println!(
                    "{}",
                    json!({"seq": seq, "tree_size": size, "leaf_hash": leaf.to_hex(), "root_hash": root.to_hex(), "proof": hashes_hex(&proof)})
                );
            } else {
                println!("entry {seq} in the tree of {size} entries");
                println!("leaf hash: {}", leaf.to_hex());
                println!("root hash: {}", root.to_hex());
                println!("proof ({} hashes):", proof.len());
                for h in &proof {
                    println!("  {}", h.to_hex());
                }
            }
        }
        ProofCommand::Consistency { from, to } => {
            let to = match to {
                Some(t) => t,
                None => store.size().await?,
            };
            let proof = store.consistency_proof(from, to).await?;
            let old_root = store.root_at(from).await?;
            let new_root = store.root_at(to).await?;
            writ_audit::verify_consistency(from, to, &old_root, &new_root, &proof)
                .context("the store produced a consistency proof that does not verify; run `writ audit verify`")?;
            if global.json {
                println!(
                    "{}",
                    json!({"from": from, "to": to, "old_root_hash": old_root.to_hex(), "new_root_hash": new_root.to_hex(), "proof": hashes_hex(&proof)})
                );
            } else {
                println!("tree of {from} entries → tree of {to} entries");
                println!("old root: {}", old_root.to_hex());
                println!("new root: {}", new_root.to_hex());
                println!("proof ({} hashes):", proof.len());
                for h in &proof {
                    println!("  {}", h.to_hex());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    store: Arc<dyn Store>,
    trusted: Option<std::path::PathBuf>,
    key: Option<String>,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    let verifier = match (&key, keys::verifier_key_path(&global.data_dir).exists()) {
        (None, false) => None,
        _ => Some(keys::load_verifier(&global.data_dir, key.as_deref())?),
    };
    let trusted_checkpoint = match trusted {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading trusted checkpoint {}", path.display()))?,
        ),
        None => None,
    };
    let size = store.size().await?;
    let bar = crate::progress_bar(size, global, "verifying");
    let options = VerifyOptions {
        verifier,
        trusted_checkpoint,
        batch: 0,
    };
    let progress_bar = bar.clone();
    let started = std::time::Instant::now();
    let result = writ_store::verify_log(store.as_ref(), &options, &move |n| {
        progress_bar.set_position(n)
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if global.json {
                let mut v = serde_json::to_value(&report)?;
                v["ok"] = Value::Bool(true);
                println!("{v}");
            } else {
                println!(
                    "ok: {} entries, {} stored subtree hashes and {} checkpoints verified in {:.2?}",
                    report.entries_checked,
                    report.nodes_checked,
                    report.checkpoints_checked,
                    started.elapsed()
                );
                println!("root hash at size {}: {}", report.size, report.root);
                if !report.checkpoint_signatures_checked {
                    println!("warning: no verifier key, so checkpoint signatures were not checked");
                }
                match report.trusted_size {
                    Some(s) => println!("consistent with the trusted checkpoint at size {s}"),
                    None => println!(
                        "note: no --trusted-checkpoint given; a rollback to an older copy cannot be detected without one"
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let first = err.first_bad_seq();
            if global.json {
                println!(
                    "{}",
                    json!({"ok": false, "error": err.to_string(), "first_bad_seq": first})
                );
            } else {
                eprintln!("verification FAILED: {err}");
                if let Some(seq) = first {
                    eprintln!("first bad sequence number: {seq}");
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn entry_json(e: &StoredEntry) -> anyhow::Result<Value> {
    let entry = e
        .decode()
        .with_context(|| format!("entry {} is corrupt; run `writ audit verify`", e.seq))?;
    Ok(serde_json::to_value(entry)?)
}

async fn query(
    store: Arc<dyn Store>,
    mut filter: EntryFilter,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    filter.limit = filter.limit.clamp(1, 10_000);
    let rows = store.query(&filter).await?;
    if global.json {
        let values = rows
            .iter()
            .map(entry_json)
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("{}", Value::Array(values));
    } else {
        if rows.is_empty() {
            println!("no matching entries");
        }
        for row in &rows {
            let e = row
                .decode()
                .with_context(|| format!("entry {} is corrupt", row.seq))?;
            println!(
                "{:>8}  {}  {:<18} {}  {}  {}",
                e.seq,
                e.time,
                e.kind.as_str(),
                e.action_id,
                e.actor.as_deref().unwrap_or("-"),
                e.payload
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(store: Arc<dyn Store>, format: ExportFormat) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = 0u64;
    loop {
        let rows = store.entries(next, 10_000).await?;
        let Some(last) = rows.last() else { break };
        next = last.seq + 1;
        for row in &rows {
            match format {
                ExportFormat::Jsonl => {
                    out.write_all(&row.entry)?;
                    out.write_all(b"\n")?;
                }
                ExportFormat::Ocsf => {
                    let entry = row
                        .decode()
                        .with_context(|| format!("entry {} is corrupt", row.seq))?;
                    serde_json::to_writer(
                        &mut out,
                        &writ_gateway::ocsf::api_activity(&entry, row),
                    )?;
                    out.write_all(b"\n")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The entries of one governed action, as the pipeline will write them.
fn demo_record() -> anyhow::Result<Vec<NewEntry>> {
    let action = writ_core::ActionId::generate();
    let args = json!({"repo": "acme/api", "pull_number": 1234, "base": "main"});
    let steps = [
        (
            EntryKind::Requested,
            "agent:deploy-bot",
            json!({
                "connector": "github", "operation": "merge_pull_request", "args": args,
                "authorized_by": {"user": "user:alice", "grant": "grant_demo"},
                "decided_by": {"agent": "agent:deploy-bot"},
                "intent": "ship the fix for the login timeout", "rationale": "CI is green and the PR is approved"
            }),
        ),
        (
            EntryKind::Evaluated,
            "system",
            json!({
                "verdict": "require_approval", "policies": ["merge-needs-maintainer"],
                "reasons": ["merging to main needs a maintainer's approval"], "bundle_version": "sha256:demo"
            }),
        ),
        (
            EntryKind::ApprovalRequested,
            "system",
            json!({"approvers": ["group:maintainers"], "quorum": 1, "expires_in": "30m"}),
        ),
        (
            EntryKind::ApprovalDecided,
            "user:bob",
            json!({"decision": "approve", "comment": "looks good"}),
        ),
        (
            EntryKind::Evaluated,
            "system",
            json!({"verdict": "allow", "policies": ["merge-needs-maintainer"], "bundle_version": "sha256:demo"}),
        ),
        (
            EntryKind::Executed,
            "system",
            json!({"connector": "github", "operation": "merge_pull_request", "credential": "github-app@1", "outcome": "success", "status": 200}),
        ),
        (
            EntryKind::Responded,
            "system",
            json!({"status": "executed", "result": {"merged": true, "sha": "6dcb09b5"}}),
        ),
    ];
    steps
        .into_iter()
        .map(|(kind, actor, payload)| {
            Ok(NewEntry::new(
                action.clone(),
                kind,
                Some(actor.to_owned()),
                payload,
            )?)
        })
        .collect()
}

async fn demo(store: Arc<dyn Store>, global: &Global) -> anyhow::Result<ExitCode> {
    if !keys::signing_key_path(&global.data_dir).exists() {
        let verifier = keys::generate(&global.data_dir, keys::DEFAULT_ORIGIN, false)?;
        println!("created the log's signing key; verifier key: {verifier}");
    }
    let record = demo_record()?;
    let action = record[0].action_id.clone();
    let receipts = store.append(record).await?;
    let (cp, note) = sign_checkpoint(store.as_ref(), global).await?;
    println!("recorded action {action} as {} entries:", receipts.len());
    for row in store
        .query(&EntryFilter {
            action_id: Some(action.to_string()),
            limit: 100,
            ..Default::default()
        })
        .await?
    {
        let e = row.decode()?;
        let proof = store.inclusion_proof(e.seq, cp.size).await?;
        writ_audit::verify_inclusion(&row.leaf_hash, e.seq, cp.size, &proof, &cp.root)?;
        println!(
            "  #{:<6} {:<18} {:<18} included in checkpoint {} ({} proof hashes) ✓",
            e.seq,
            e.kind.as_str(),
            e.actor.as_deref().unwrap_or("-"),
            cp.size,
            proof.len()
        );
    }
    println!();
    println!("signed checkpoint:");
    print!("{note}");
    let verifier = keys::load_verifier(&global.data_dir, None)?;
    let report = writ_store::verify_log(
        store.as_ref(),
        &VerifyOptions {
            verifier: Some(verifier),
            trusted_checkpoint: Some(note),
            batch: 0,
        },
        &|_| {},
    )
    .await?;
    println!();
    println!(
        "verified the whole log: {} entries, {} checkpoints, root {}",
        report.size, report.checkpoints_checked, report.root
    );
    println!();
    println!("next: writ audit query --action-id {action}");
    println!("      writ audit proof inclusion --seq {}", receipts[0].seq);
    println!("      writ audit export --format ocsf");
    Ok(ExitCode::SUCCESS)
}
