//! The `writ` binary's audit commands, end to end through the real executable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn writ(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_writ"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("WRIT_DATABASE_URL");
    cmd
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(cmd: &mut Command, stdin: Option<&str>) -> String {
    let (code, out, err) = run(cmd, stdin);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

fn lines(n: usize, offset: usize) -> String {
    (offset..offset + n)
        .map(|i| {
            format!(
                r#"{{"action_id":"act_{i}","kind":"requested","actor":"agent:bot","payload":{{"connector":"github","operation":"merge_pull_request","n":{i}}}}}"#
            ) + "\n"
        })
        .collect()
}

#[test]
fn keys_append_checkpoint_proof_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = ok(
        writ(&data).args([
            "keys",
            "generate",
            "--origin",
            "audit.example.com/test",
            "--json",
        ]),
        None,
    );
    let keys: Value = serde_json::from_str(&out).unwrap();
    let verifier = keys["verifier_key"].as_str().unwrap().to_owned();
    assert!(
        verifier.starts_with("audit.example.com/test+"),
        "{verifier}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("log.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The key is never replaced by accident.
    let (code, _, err) = run(writ(&data).args(["keys", "generate"]), None);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    let out = ok(
        writ(&data).args(["audit", "append", "--json"]),
        Some(&lines(25, 0)),
    );
    let appended: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(appended["appended"], 25);
    assert_eq!(appended["last_seq"], 24);

    let note = ok(writ(&data).args(["audit", "checkpoint"]), None);
    assert!(note.starts_with("audit.example.com/test\n25\n"), "{note}");
    assert!(
        note.contains("\n\n\u{2014} audit.example.com/test "),
        "{note}"
    );

    let proof = ok(
        writ(&data).args(["audit", "proof", "inclusion", "--seq", "7", "--json"]),
        None,
    );
    let proof_json: Value = serde_json::from_str(&proof).unwrap();
    assert_eq!(proof_json["tree_size"], 25);
    let consistency = ok(
        writ(&data).args(["audit", "proof", "consistency", "--from", "10", "--json"]),
        None,
    );
    let consistency: Value = serde_json::from_str(&consistency).unwrap();
    assert_eq!(consistency["to"], 25);
    assert!(!consistency["proof"].as_array().unwrap().is_empty());

    let export = ok(
        writ(&data).args(["audit", "export", "--format", "jsonl"]),
        None,
    );
    let exported: Vec<&str> = export.lines().collect();
    assert_eq!(exported.len(), 25);

    // An independent implementation (Python, from the specs) checks the signed checkpoint and the
    // inclusion of entry 7, computing the leaf from the exported bytes.
    let note_file = dir.path().join("checkpoint.note");
    std::fs::write(&note_file, &note).unwrap();
    let entry_file = dir.path().join("entry7.json");
    std::fs::write(&entry_file, exported[7]).unwrap();
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    if python_has_cryptography() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_verify.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&verifier)
            .arg(&note_file)
            .arg(&entry_file)
            .arg(&proof_file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "independent verifier: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("ok: audit.example.com/test size 25, entry 7 included"),
            "{stdout}"
        );
        // It is not a rubber stamp: a changed entry fails.
        std::fs::write(&entry_file, exported[7].replace("\"n\":7", "\"n\":8")).unwrap();
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_verify.py"))
            .args([verifier.as_str()])
            .arg(&note_file)
            .arg(&entry_file)
            .arg(&proof_file)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    let out = ok(
        writ(&data)
            .args(["audit", "verify", "--trusted-checkpoint"])
            .arg(&note_file)
            .arg("--json"),
        None,
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["size"], 25);
    assert_eq!(report["trusted_size"], 25);

    // Query by action and by kind.
    let out = ok(
        writ(&data).args(["audit", "query", "--action-id", "act_3", "--json"]),
        None,
    );
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["payload"]["n"], 3);
    let out = ok(
        writ(&data).args(["audit", "query", "--kind", "executed"]),
        None,
    );
    assert!(out.contains("no matching entries"), "{out}");

    // OCSF export: one API Activity event per entry.
    let ocsf = ok(
        writ(&data).args(["audit", "export", "--format", "ocsf"]),
        None,
    );
    let first: Value = serde_json::from_str(ocsf.lines().next().unwrap()).unwrap();
    assert_eq!(first["class_uid"], 6003);
    assert_eq!(first["api"]["operation"], "merge_pull_request");
    assert_eq!(first["metadata"]["correlation_uid"], "act_0");
}

#[test]
fn a_malformed_line_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut input = lines(3, 0);
    input.push_str("{\"action_id\":\"act_x\",\"kind\":\"requested\"}\n");
    input.push_str(&lines(2, 3));
    let (code, _, err) = run(writ(&data).args(["audit", "append"]), Some(&input));
    assert_ne!(code, 0);
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("missing field `payload`"), "{err}");
    assert!(err.contains("nothing was appended"), "{err}");
    let out = ok(writ(&data).args(["audit", "verify", "--json"]), None);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["size"], 0);
}

#[test]
fn verify_names_the_first_bad_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(writ(&data).args(["keys", "generate"]), None);
    ok(writ(&data).args(["audit", "append"]), Some(&lines(12, 0)));
    ok(writ(&data).args(["audit", "checkpoint"]), None);
    let conn = rusqlite_free_tamper(&data.join("writ.db"));
    assert!(conn, "tampering failed");
    let (code, _, err) = run(writ(&data).args(["audit", "verify"]), None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("verification FAILED: entry 9"), "{err}");
    assert!(err.contains("first bad sequence number: 9"), "{err}");
}

/// Tampers with entry 9 through the sqlite3 shell if present, otherwise through Python's sqlite3.
fn rusqlite_free_tamper(db: &Path) -> bool {
    let script = format!(
        "import sqlite3; c = sqlite3.connect({db:?}); c.execute('DROP TRIGGER audit_entries_no_update'); \
         c.execute(\"UPDATE audit_entries SET entry = CAST(replace(CAST(entry AS TEXT), '\\\"n\\\":9', '\\\"n\\\":99') AS BLOB) WHERE seq = 9\"); c.commit()",
        db = db.display().to_string()
    );
    Command::new("python3")
        .args(["-c", &script])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn python_has_cryptography() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the Python `cryptography` package"
        );
        eprintln!(
            "skipping the independent verification: python3 with `cryptography` is not available"
        );
    }
    ok
}

/// The same commands on PostgreSQL, selected by `--database-url` alone.
#[test]
fn the_cli_runs_on_postgresql_with_only_a_url() {
    let Ok(base) = std::env::var("WRIT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set WRIT_TEST_POSTGRES_URL"
        );
        eprintln!("skipping: WRIT_TEST_POSTGRES_URL is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = format!(
        "writ_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let url = rt
        .block_on(writ_store::postgres::url_with_fresh_schema(&base, &schema))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pg = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_writ"));
        c.arg("--data-dir")
            .arg(&data)
            .arg("--database-url")
            .arg(&url);
        c
    };
    ok(pg().args(["keys", "generate"]), None);
    let out = ok(
        pg().args(["audit", "append", "--json"]),
        Some(&lines(12, 0)),
    );
    assert!(out.contains("11"), "{out}");
    let note = ok(pg().args(["audit", "checkpoint"]), None);
    assert!(note.contains("\n12\n"), "{note}");
    ok(pg().args(["audit", "append"]), Some(&lines(5, 12)));
    let note_file = dir.path().join("cp.note");
    std::fs::write(&note_file, &note).unwrap();
    let out = ok(
        pg().args(["audit", "verify", "--json", "--trusted-checkpoint"])
            .arg(&note_file),
        None,
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["size"], 17, "{out}");
    // Nothing went to a SQLite file: the data directory holds only the keys.
    assert!(!data.join("writ.db").exists());
    let out = ok(
        pg().args(["audit", "query", "--action-id", "act_3", "--json"]),
        None,
    );
    assert!(out.contains("act_3"), "{out}");
    rt.block_on(writ_store::postgres::drop_schema(&base, &schema))
        .unwrap();
}
