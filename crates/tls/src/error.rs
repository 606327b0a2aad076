use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM file with {what}")]
    NotPem { path: PathBuf, what: &'static str },
    #[error("{path}: private key is accessible by group or others (mode {mode:o}); run chmod 600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: unusable key or certificate: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier setup failed: {0}")]
    Verifier(String),
}
