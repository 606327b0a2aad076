//! Reading PEM certificates and keys, with the checks an operator needs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NotPem {
            path: path.to_owned(),
            what: "certificates",
        })?;
    if certs.is_empty() {
        return Err(TlsError::NotPem {
            path: path.to_owned(),
            what: "a CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// A private key, refused when group or others can read or write it.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NotPem {
        path: path.to_owned(),
        what: "a PRIVATE KEY block",
    })
}

/// Certificate chain plus its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(cert)?;
    let der = load_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Unusable {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })?;
    Ok(Arc::new(certified))
}

/// A root store holding the CA certificates of a PEM file.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
