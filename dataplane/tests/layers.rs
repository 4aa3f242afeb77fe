//! The layers import one way: api → engine → dns/datapath/drivers/store →
//! domain → sys (telemetry, a leaf, imported by whoever counts). A
//! `use crate::X` that points up (or sideways between the middle layers)
//! fails here, naming the file and the import.

use std::path::Path;

/// What each layer may import from the crate (besides itself and `error`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("domain", &["sys"]),
    ("datapath", &["domain", "sys"]),
    // Prometheus series: plain values in, text out; whoever counts imports it.
    ("telemetry.rs", &[]),
    ("dns", &["domain", "sys", "telemetry"]),
    ("drivers", &["domain", "sys"]),
    ("store.rs", &["domain", "sys"]),
    ("cluster.rs", &["domain", "sys"]),
    ("engine", &["datapath", "dns", "drivers", "store", "cluster", "domain", "sys", "telemetry"]),
    ("api", &["engine", "datapath", "dns", "drivers", "store", "cluster", "domain", "sys", "telemetry"]),
];

fn sources(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("read the source dir").flatten() {
            sources(&e.path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (layer, allowed) in ALLOWED {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "layer {layer} has no source");
        let own = layer.trim_end_matches(".rs");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            for (i, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let module: String =
                        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    checked += 1;
                    if module != own && module != "error" && !allowed.contains(&module.as_str()) {
                        wrong.push(format!("{}:{}: {layer} imports {module}", f.display(), i + 1));
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} imports seen: the check reads nothing");
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}
