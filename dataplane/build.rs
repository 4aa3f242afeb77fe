//! Checks that the BPF object exists before `include_bytes_aligned!` embeds it.
use std::path::Path;

fn main() {
    let obj =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/bpfel-unknown-none/release/dataplane");
    println!("cargo:rerun-if-changed={}", obj.display());
    if !obj.exists() {
        panic!(
            "BPF object {} is missing: build it first with `cargo xtask build-ebpf` (or `cargo xtask build`)",
            obj.display()
        );
    }
}
