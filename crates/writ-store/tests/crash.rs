//! Crash safety: a process appending with many concurrent writers is killed with SIGKILL; after
//! restart the log verifies and every append it had acknowledged is there.
//!
//! `harness = false`: this binary is both the test (the parent) and, when started with
//! `WRIT_CRASH_CHILD_URL`, the victim process (the child).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use writ_store::VerifyOptions;

fn main() {
    if let Ok(url) = std::env::var("WRIT_CRASH_CHILD_URL") {
        child(&url);
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut passed = 0;
    let mut skipped = 0;
    rt.block_on(async {
        let db = common::Db::sqlite().await;
        crash_rounds(&db).await;
        passed += 1;
        db.cleanup().await;
        match common::Db::postgres().await {
            Some(db) => {
                crash_rounds(&db).await;
                passed += 1;
                db.cleanup().await;
            }
            None => skipped += 1,
        }
    });
    println!("crash: {passed} passed, 0 failed, {skipped} skipped");
}

/// The victim: 16 writers append forever, printing each acknowledged sequence number.
fn child(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = writ_store::open(Some(url), std::path::Path::new("."))
            .await
            .unwrap();
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..16u64 {
            let (store, out) = (store.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let e = common::entry(w * 1_000_000 + i);
                    let action = e.action_id.to_string();
                    let r = store.append(vec![e]).await.unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {} {action}", r[0].seq).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

async fn crash_rounds(db: &common::Db) {
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("WRIT_CRASH_CHILD_URL", db.url())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        // Let it get going, then kill it mid-flight.
        let start = Instant::now();
        while lines.lock().unwrap().len() < 200 * (round + 1)
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let got = lines.lock().unwrap().clone();
        assert!(!got.is_empty(), "the child acknowledged nothing");
        for line in got {
            let mut parts = line.split(' ');
            assert_eq!(parts.next(), Some("ack"), "{line}");
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let action = parts.next().unwrap().to_owned();
            assert!(
                acked.insert(seq, action).is_none(),
                "seq {seq} acknowledged twice"
            );
        }

        let store = db.reopen().await;
        let report = writ_store::verify_log(store.as_ref(), &VerifyOptions::default(), &|_| {})
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: the log does not verify after SIGKILL: {e}")
            });
        let mut next = 0;
        let mut found = BTreeMap::new();
        while next < report.size {
            for row in store.entries(next, 10_000).await.unwrap() {
                found.insert(row.seq, row.action_id.clone());
                next = row.seq + 1;
            }
        }
        for (seq, action) in &acked {
            assert_eq!(
                found.get(seq),
                Some(action),
                "round {round}: acknowledged entry {seq} is lost"
            );
        }
        eprintln!(
            "round {round}: killed with {} acknowledged, {} in the log, verified",
            acked.len(),
            report.size
        );
    }
}
