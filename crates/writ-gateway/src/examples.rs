//! The example policy bundle, built into the binary.

use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/example_policies.rs"));

/// Writes the example bundle into `dir` (created if needed), refusing to overwrite a file.
pub fn write_example_policies(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    for (rel, contents) in EXAMPLE_POLICY_FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::io::Write::write_all(&mut file, contents.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_embedded_and_written_without_overwriting() {
        assert!(
            EXAMPLE_POLICY_FILES
                .iter()
                .any(|(p, _)| p.ends_with(".cedarschema"))
        );
        assert!(
            EXAMPLE_POLICY_FILES
                .iter()
                .any(|(p, _)| p.starts_with("tests/"))
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write_example_policies(dir.path()).unwrap();
        assert_eq!(written.len(), EXAMPLE_POLICY_FILES.len());
        let err = write_example_policies(dir.path()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
