//! Compile the XDP program (bpf/lb.c) with clang into OUT_DIR/lb.o, which
//! src/lib.rs embeds. Rust-written BPF (aya-ebpf) needs nightly and a newer
//! LLVM than this toolchain has, so the kernel side is C (issue 14).
//!
//! A machine without clang (a fresh one running the README's demo command)
//! builds with `bpf/prebuilt/lb.o` instead, the same program compiled
//! here, as long as its recorded source digest (`bpf/prebuilt/lb.digest`)
//! matches bpf/lb.c and lb.h; a stale one is refused. BPF objects are the
//! same on every little-endian host. `EG_XDP_REFRESH_PREBUILT=1` writes
//! both files from a fresh compile; a unit test fails while they are stale.

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
    println!("cargo:rerun-if-env-changed=EG_XDP_REFRESH_PREBUILT");
    let prebuilt = bpf.join("prebuilt");
    for f in ["lb.o", "lb.digest"] {
        println!("cargo:rerun-if-changed={}", prebuilt.join(f).display());
    }
    let digest = source_digest(&bpf);
    println!("cargo:rustc-env=EG_XDP_SOURCE_DIGEST={digest}");
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
        Ok(s) if s.success() => {
            if std::env::var_os("EG_XDP_REFRESH_PREBUILT").is_some() {
                std::fs::create_dir_all(&prebuilt).expect("create bpf/prebuilt");
                std::fs::copy(&out, prebuilt.join("lb.o")).expect("write bpf/prebuilt/lb.o");
                std::fs::write(prebuilt.join("lb.digest"), format!("{digest}\n"))
                    .expect("write bpf/prebuilt/lb.digest");
            }
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && prebuilt_matches(&prebuilt, &digest) =>
        {
            std::fs::copy(prebuilt.join("lb.o"), &out).expect("copy bpf/prebuilt/lb.o");
            println!(
                "cargo:warning=eg-xdp: no `{clang}` here; using bpf/prebuilt/lb.o (built from \
                 this bpf/lb.c). Changing the program needs `apt-get install clang libbpf-dev`"
            );
        }
        Ok(s) => panic!(
            "eg-xdp: `{clang} -target bpf` failed on bpf/lb.c ({s}); the BPF headers come \
             from libbpf-dev: apt-get install clang libbpf-dev"
        ),
        Err(e) => panic!(
            "eg-xdp: cannot run `{clang}` ({e}), and bpf/prebuilt/lb.o is not built from \
             this bpf/lb.c: the XDP program is C built by clang. Install it with \
             `apt-get install clang libbpf-dev` (Debian), or set CLANG to a clang that \
             targets bpf, or build without XDP (`--no-default-features`)"
        ),
    }
}

/// Debian's multiarch directory for the target being built (the headers
/// of the machine the program will load on).
fn multiarch() -> String {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let little = std::env::var("CARGO_CFG_TARGET_ENDIAN").map_or(true, |e| e == "little");
    match arch.as_str() {
        "arm" => "arm-linux-gnueabihf".into(),
        "x86" => "i386-linux-gnu".into(),
        "powerpc64" if little => "powerpc64le-linux-gnu".into(),
        other => format!("{other}-linux-gnu"),
    }
}

/// FNV-1a 64 over lb.h then lb.c: tells a prebuilt object's sources from
/// others (a staleness check, not a signature).
fn source_digest(bpf: &std::path::Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in ["lb.h", "lb.c"] {
        let bytes = std::fs::read(bpf.join(f)).unwrap_or_else(|e| panic!("bpf/{f}: {e}"));
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn prebuilt_matches(prebuilt: &std::path::Path, digest: &str) -> bool {
    prebuilt.join("lb.o").is_file()
        && std::fs::read_to_string(prebuilt.join("lb.digest")).is_ok_and(|d| d.trim() == digest)
}
