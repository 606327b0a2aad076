//! Compile the XDP program (bpf/lb.c) with clang into OUT_DIR/lb.o, which
//! src/lib.rs embeds. Rust-written BPF (aya-ebpf) needs nightly and a newer
//! LLVM than this toolchain has, so the kernel side is C (issue 14).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("lb.o");
    let bpf = dir.join("bpf");
    for f in ["lb.c", "lb.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        // asm/types.h (pulled in by linux/types.h) lives under the
        // multiarch directory on Debian; -target bpf does not look there.
        .arg(format!("-I/usr/include/{}", multiarch()))
        .arg("-I")
        .arg(&bpf)
        .arg("-c")
        .arg(bpf.join("lb.c"))
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "eg-xdp: `{clang} -target bpf` failed on bpf/lb.c ({s}); the BPF headers come \
             from libbpf-dev: apt-get install clang libbpf-dev"
        ),
        Err(e) => panic!(
            "eg-xdp: cannot run `{clang}` ({e}): the XDP program is C built by clang. \
             Install it with `apt-get install clang libbpf-dev` (Debian), or set CLANG to \
             a clang that targets bpf"
        ),
    }
}

/// Debian's multiarch directory for the target being built (the headers
/// of the machine the program will load on).
fn multiarch() -> String {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    match arch.as_str() {
        "arm" => "arm-linux-gnueabihf".into(),
        "x86" => "i386-linux-gnu".into(),
        "powerpc64" => "powerpc64le-linux-gnu".into(),
        other => format!("{other}-linux-gnu"),
    }
}
