//! `writ init` through the real binary: what it writes is a valid configuration and a bundle whose
//! own test cases pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn writ() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_writ"));
    cmd.env_remove("WRIT_DATABASE_URL");
    cmd
}

#[test]
fn init_writes_a_working_start_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("site");
    let out = writ()
        .arg("init")
        .arg(&target)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["files"].as_array().unwrap().len() > 3, "{report}");

    let text = std::fs::read_to_string(target.join("writ.toml")).unwrap();
    writ_gateway::Config::from_toml(&text, "writ.toml", Vec::new()).unwrap();

    let out = writ()
        .args(["policy", "test"])
        .arg(target.join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let before = std::fs::read_to_string(target.join("writ.toml")).unwrap();
    let out = writ().arg("init").arg(&target).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(target.join("writ.toml")).unwrap(),
        before
    );
}
