use std::path::PathBuf;

use super::*;

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("anymesh-support-{}-{name}", std::process::id()));
        if let Err(e) = std::fs::write(&path, contents) {
            panic!("writing {}: {e}", path.display());
        }
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read(source: SecretSource<'_>) -> String {
    match source.read() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_rule_drops_trailing_whitespace_only() {
    assert_eq!(trim_secret("s3cret\n"), "s3cret");
    assert_eq!(trim_secret("s3cret\r\n"), "s3cret");
    assert_eq!(trim_secret("s3cret \t\n\n"), "s3cret");
    assert_eq!(trim_secret("  s3cret"), "  s3cret");
    assert_eq!(trim_secret("in side"), "in side");
    assert_eq!(trim_secret("\n"), "");
}

#[test]
fn a_file_is_read_and_trimmed() {
    let f = TempFile::new("file", b"token-1\r\n");
    assert_eq!(read(SecretSource::File(&f.0)), "token-1");
    // Read again each time: a rotated file is seen.
    std::fs::write(&f.0, "token-2\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(SecretSource::File(&f.0)), "token-2");
}

#[test]
fn an_environment_variable_is_read_and_trimmed_the_same_way() {
    let name = format!("ANYMESH_SUPPORT_TEST_{}", std::process::id());
    // A variable of this test's own: no other test reads it.
    std::env::set_var(&name, " pass word \n");
    assert_eq!(read(SecretSource::Env(&name)), " pass word");
    std::env::remove_var(&name);
    match SecretSource::Env(&name).read() {
        Err(e @ SecretError::EnvNotSet { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("environment variable {name} is not set")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_or_binary_file_is_an_error_naming_the_path_only() {
    let missing = std::env::temp_dir().join("anymesh-support-no-such-file");
    match SecretSource::File(&missing).read() {
        Err(SecretError::ReadFile { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let f = TempFile::new("binary", b"pw\xff\xfe");
    match SecretSource::File(&f.0).read() {
        Err(e @ SecretError::ReadFile { .. }) => {
            let text = e.to_string();
            assert!(text.contains("UTF-8") && !text.contains("pw"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_file_wins_and_nothing_configured_is_none() {
    let p = Path::new("/run/secrets/t");
    assert_eq!(
        SecretSource::from_options(Some(p), Some("T")),
        Some(SecretSource::File(p))
    );
    assert_eq!(
        SecretSource::from_options(None, Some("T")),
        Some(SecretSource::Env("T"))
    );
    assert_eq!(SecretSource::from_options(None, None), None);
}
