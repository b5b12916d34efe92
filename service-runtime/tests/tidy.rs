//! Tidy checks over the whole workspace, run as ordinary tests so `cargo test` is the whole gate:
//! every Rust file says what it is for, and every crate takes its lints and dependency versions
//! from the workspace.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("service-runtime sits in the workspace root").to_owned()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            // Build output, generated code and fuzz corpora are not ours to tidy.
            if !matches!(name.as_str(), "target" | "generated" | "corpus" | "artifacts" | "data" | ".git") {
                walk(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(&workspace_root(), &mut all);
    all.retain(|p| p.extension().is_some_and(|e| e == ext));
    all
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let offenders: Vec<_> = files("rs")
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(offenders.is_empty(), "files without a leading `//!` line: {offenders:#?}");
}

#[test]
fn crates_use_workspace_lints_and_versions() {
    let root = workspace_root();
    let mut offenders = Vec::new();
    for manifest in files("toml").into_iter().filter(|p| p.file_name().is_some_and(|n| n == "Cargo.toml")) {
        if manifest == root.join("Cargo.toml") || manifest.components().any(|c| c.as_os_str() == "fuzz") {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).unwrap_or_default();
        let doc: toml::Table = match toml::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                offenders.push(format!("{}: {e}", manifest.display()));
                continue;
            }
        };
        if doc.get("lints").and_then(|l| l.get("workspace")).and_then(toml::Value::as_bool) != Some(true) {
            offenders.push(format!("{}: missing [lints] workspace = true", manifest.display()));
        }
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = doc.get(section).and_then(toml::Value::as_table) else { continue };
            for (name, spec) in deps {
                let from_workspace = spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
                if !from_workspace {
                    offenders.push(format!("{}: {section}.{name} does not use the workspace version", manifest.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
