//! Points `include_bytes_aligned!` at the BPF object when `cargo xtask
//! build-ebpf` has built it, and at an empty placeholder otherwise, so a
//! fresh clone can `cargo check`, `cargo clippy` and run the unit tests
//! before any BPF build. A daemon built against the placeholder refuses to
//! start and says to run `cargo xtask build`.
use std::path::Path;

fn main() {
    let obj =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/bpfel-unknown-none/release/dataplane");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo::rustc-check-cfg=cfg(dataplane_bpf_placeholder)");
    let path = if obj.exists() {
        obj
    } else {
        let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("placeholder.o");
        std::fs::write(&out, b"").expect("writing the BPF placeholder into OUT_DIR");
        println!(
            "cargo::warning=BPF object {} is missing: building against a placeholder (the daemon will not start; run `cargo xtask build`)",
            obj.display()
        );
        println!("cargo::rustc-cfg=dataplane_bpf_placeholder");
        out
    };
    println!("cargo::rustc-env=DATAPLANE_BPF_OBJECT={}", path.display());
}
