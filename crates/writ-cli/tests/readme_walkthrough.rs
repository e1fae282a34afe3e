//! The README's walkthrough, run as written: every line of the marked block except the first
//! (`cargo build --release`, replaced by putting this build's `writ` on the PATH), in a fresh
//! directory, with `bash -euo pipefail`. It needs `curl` and `jq` (`.ci/run` installs them) and
//! the ports 8080 and 9090 the walkthrough uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn walkthrough() -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("README has a walkthrough block");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("the walkthrough block is closed");
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(body, _)| body)
        .expect("the walkthrough is one sh code block");
    let mut lines = body.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("cargo build --release"), "{first}");
    lines.collect::<Vec<_>>().join("\n")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    if !(have("curl") && have("jq")) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install curl and jq for the README walkthrough"
        );
        eprintln!("skipping: the README walkthrough needs curl and jq");
        return;
    }
    for port in [8080, 9090] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port}, which the README walkthrough uses, is taken"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_writ"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Background jobs die with the script, whatever happens.
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}\n",
        walkthrough()
    );
    let out = Command::new("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("WRIT_DATA_DIR")
        .env_remove("WRIT_DATABASE_URL")
        .env_remove("WRIT_MASTER_KEY")
        .env_remove("WRIT_URL")
        .env_remove("WRIT_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What each step promises.
    assert_eq!(
        stdout.matches("\"status\": \"succeeded\"").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("\"no-rebase-merges\""), "{stdout}");
    assert!(
        stdout.contains("\"status\": \"pending_approval\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("cannot approve an action their own agent asked for"),
        "{stdout}"
    );
    assert!(stdout.contains("approval_decided"), "{stdout}");
    assert!(
        !stdout.contains("ghp_demo_secret"),
        "the credential reached the agent: {stdout}"
    );
    let log = std::fs::read_to_string(dir.path().join("writ-demo/serve.log")).unwrap();
    assert!(log.contains("WRIT_TOKEN="), "{log}");
}
