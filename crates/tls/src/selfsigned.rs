//! Self-signed certificates for the demo and for tests.

use std::path::{Path, PathBuf};

use crate::TlsError;

/// A generated certificate and key, as PEM and as files.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Generate a self-signed certificate for `names` and write `<stem>.crt`
/// and `<stem>.key` (mode 0600) into `dir`.
pub fn self_signed(names: &[&str], dir: &Path, stem: &str) -> Result<SelfSigned, TlsError> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Unusable {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let out = SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
        cert_path,
        key_path,
    };
    write_private(&out.key_path, out.key_pem.as_bytes())?;
    std::fs::write(&out.cert_path, &out.cert_pem).map_err(|source| TlsError::Read {
        path: out.cert_path.clone(),
        source,
    })?;
    Ok(out)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)
}
