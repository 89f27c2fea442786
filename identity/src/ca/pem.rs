//! Small file and PEM helpers the CA and its client share: PEM encoding
//! (rustls-pki-types only decodes), atomic private writes, Unix times.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::CaError;

/// One PEM block of `label` around `der`.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Certificates as consecutive PEM blocks.
pub(crate) fn certs_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| encode("CERTIFICATE", c)).collect()
}

/// Every certificate in PEM text; `what` names the text in errors.
pub(crate) fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE PEM block"));
    }
    Ok(certs)
}

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CaError> {
    fs::read(path).map_err(|e| CaError::io(path, e))
}

/// Reads the certificates of a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let text = read(path)?;
    parse_certs(&text, "certificates").map_err(|e| CaError::bad_file(path, e))
}

/// Writes `contents` to `path` atomically (a temporary file in the same
/// directory, synced, then renamed over it), readable by the owner only.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        // The mode above applies only when the file is created.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CaError::io(path, e)
    })
}

/// Creates a directory (and its parents) readable by the owner only.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), CaError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| CaError::io(path, e))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the Unix epoch.
pub(crate) fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time for humans and logs: RFC 3339 in UTC.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = i64::try_from(unix(t)).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_certificates_parse_back_and_private_files_are_private() {
        let der = CertificateDer::from((0u8..=200).collect::<Vec<u8>>());
        let text = certs_pem(&[der.clone(), der.clone()]);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(
            parse_certs(text.as_bytes(), "x").expect("parses"),
            vec![der.clone(), der]
        );
        assert!(parse_certs(b"nothing", "x").is_err());

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.pem");
        write_private(&path, b"one").expect("written");
        write_private(&path, b"two").expect("rewritten");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temporary file left"
        );
        assert_eq!(rfc3339(from_unix(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
