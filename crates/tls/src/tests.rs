use std::os::unix::fs::PermissionsExt;

use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn generated_pair_loads() {
    let d = dir();
    let s = self_signed(&["localhost"], d.path(), "a").expect("generate");
    load_certified_key(&s.cert_path, &s.key_path).expect("loads");
}

#[test]
fn missing_file_is_named() {
    let e = load_certs(std::path::Path::new("/nonexistent/x.pem")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.pem"), "{e}");
}

#[test]
fn non_pem_is_refused() {
    let d = dir();
    let p = d.path().join("junk.pem");
    std::fs::write(&p, "hello").expect("write");
    let e = load_certs(&p).unwrap_err();
    assert!(e.to_string().contains("not a PEM file"), "{e}");
}

#[test]
fn mismatched_key_is_refused() {
    let d = dir();
    let a = self_signed(&["a"], d.path(), "a").expect("a");
    let b = self_signed(&["b"], d.path(), "b").expect("b");
    let e = load_certified_key(&a.cert_path, &b.key_path).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn group_readable_key_is_refused() {
    let d = dir();
    let a = self_signed(&["a"], d.path(), "a").expect("a");
    std::fs::set_permissions(&a.key_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let e = load_certified_key(&a.cert_path, &a.key_path).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
