//! Every crate's direct dependencies are used (the check cargo-machete makes): a
//! dependency named in a Cargo.toml must appear as a path in the code it builds.

use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The names of one `[section]` of a Cargo.toml.
fn section(manifest: &str, name: &str) -> Vec<String> {
    manifest
        .split(&format!("[{name}]\n"))
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|line| !line.starts_with('['))
                .filter_map(|line| line.split(['=', '.', ' ']).next())
                .filter(|name| !name.is_empty() && !name.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn no_crate_has_an_unused_direct_dependency() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut unused = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches", "examples"] {
            sources(&entry.path().join(dir), &mut files);
        }
        let code: String = files
            .iter()
            .map(|file| std::fs::read_to_string(file).unwrap())
            .collect();
        for (kind, names) in [
            ("dependencies", section(&text, "dependencies")),
            ("dev-dependencies", section(&text, "dev-dependencies")),
        ] {
            for name in names {
                let path = name.replace('-', "_");
                let used = code.match_indices(&path).any(|(at, _)| {
                    let before = code[..at].chars().next_back();
                    let after = code[at + path.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if !used {
                    unused.push(format!("{}: {kind} {name}", manifest.display()));
                }
            }
        }
    }
    assert!(unused.is_empty(), "unused dependencies: {unused:#?}");
}
