//! `writ-bench pipeline` through the real binary: a short run on SQLite must complete actions
//! through the whole pipeline and directly, without errors, and leave a log that verifies.
//! Timings are printed, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_pipeline_runs_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_writ-bench"))
        .current_dir(tmp.path())
        .env("WRIT_DATA_DIR", tmp.path().join("data"))
        .env_remove("WRIT_DATABASE_URL")
        .env_remove("WRIT_MASTER_KEY")
        .args([
            "pipeline",
            "--agents",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2s",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for phase in ["direct", "pipeline"] {
        let p = &report[phase];
        assert!(p["ok"].as_u64().unwrap() > 0, "{phase}: {p}");
        assert!(p["per_second"].as_f64().unwrap() > 0.0, "{phase}: {p}");
        assert_eq!(p["errors"], 0, "{phase}: {p}");
    }
    let audit = &report["audit"];
    assert_eq!(audit["verified"], true, "{audit}");
    // Every allowed action leaves its entries in the log, and the verifier read them all.
    assert!(
        audit["entries_appended"].as_u64().unwrap() >= report["pipeline"]["ok"].as_u64().unwrap(),
        "{audit}"
    );
    assert_eq!(audit["verified_entries"], audit["entries_after"], "{audit}");
    // The bench cleans up after itself.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bench-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `writ-bench mcp` with the reference MCP server: every phase (direct, the HTTP API, /mcp)
/// completes calls without errors. Needs `WRIT_TEST_MCP_EVERYTHING` (`.ci/run` sets it).
#[test]
fn bench_mcp_runs_all_three_paths() {
    let Some(everything) = std::env::var_os("WRIT_TEST_MCP_EVERYTHING") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI, WRIT_TEST_MCP_EVERYTHING must name the reference MCP server"
        );
        eprintln!("skipping: WRIT_TEST_MCP_EVERYTHING is not set");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_writ-bench"))
        .current_dir(tmp.path())
        .env("WRIT_DATA_DIR", tmp.path().join("data"))
        .env_remove("WRIT_DATABASE_URL")
        .env_remove("WRIT_MASTER_KEY")
        .args(["mcp", "--command"])
        .arg(&everything)
        .args([
            "--clients",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2s",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for phase in ["direct", "pipeline", "mcp"] {
        let p = &report[phase];
        assert!(p["ok"].as_u64().unwrap() > 0, "{phase}: {p}");
        assert_eq!(p["errors"], 0, "{phase}: {p}");
    }
    assert_eq!(report["tool"], "echo");
}
