//! The minimum supported Rust version, `rust-version` in Cargo.toml, checked
//! without building with that toolchain (only one toolchain is installed
//! where the tests run). Three facts together stand for such a build:
//!
//! 1. **std APIs** — `cargo clippy … -D warnings` (`.ci/run`) denies
//!    `clippy::incompatible_msrv`, which flags every use of a standard
//!    library item stabilized after `rust-version` (clippy reads it from
//!    Cargo.toml).
//! 2. **Dependencies** — every package the library builds with (normal and
//!    build dependencies, all features, as locked in Cargo.lock) declares a
//!    `rust-version` no newer than ours: [`dependencies_support_our_rust_version`].
//!    Packages that declare none are printed; their edition bounds them.
//! 3. **Language** — edition 2024 needs Rust 1.85 and let chains
//!    (`if let … && let …`) 1.88: [`the_language_features_we_use_exist_in_our_rust_version`].
//!
//! Not proven: a language feature stabilized after `rust-version` other than
//! those named in 3, or a dependency that declares a `rust-version` it does
//! not meet.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

/// `1.88` or `1.88.0` as `(1, 88, 0)`.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or_else(|_| panic!("version {text:?}")));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `cargo metadata` of the workspace with every feature on.
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn ours(metadata: &Value) -> &Value {
    let packages = metadata["packages"].as_array().expect("packages");
    packages.iter().find(|p| p["name"] == env!("CARGO_PKG_NAME")).expect("this package in the metadata")
}

fn our_rust_version() -> (u64, u64, u64) {
    version(env!("CARGO_PKG_RUST_VERSION"))
}

#[test]
fn dependencies_support_our_rust_version() {
    let metadata = metadata();
    let root = ours(&metadata)["id"].as_str().expect("package id").to_owned();
    let nodes = metadata["resolve"]["nodes"].as_array().expect("a resolved graph");
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no node {id}"));
    let packages = metadata["packages"].as_array().expect("packages");
    let package = |id: &str| packages.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("no package {id}"));

    // What a user's build compiles: normal and build dependencies, transitively.
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in node(&id)["deps"].as_array().into_iter().flatten() {
            let kinds = dep["dep_kinds"].as_array().into_iter().flatten();
            if kinds.into_iter().any(|k| k["kind"].is_null() || k["kind"] == "build") {
                stack.push(dep["pkg"].as_str().expect("dep id").to_owned());
            }
        }
    }
    seen.remove(&root);
    assert!(seen.len() > 50, "the dependency walk found only {} packages", seen.len());

    let ours = our_rust_version();
    let mut too_new = Vec::new();
    let mut undeclared = Vec::new();
    for id in &seen {
        let p = package(id);
        let name = format!("{} {}", p["name"].as_str().unwrap_or("?"), p["version"].as_str().unwrap_or("?"));
        match p["rust_version"].as_str() {
            Some(needed) if version(needed) > ours => too_new.push(format!("{name} needs Rust {needed}")),
            Some(_) => {}
            None => undeclared.push(format!("{name} (edition {})", p["edition"].as_str().unwrap_or("?"))),
        }
    }
    println!("{} dependencies checked; without a rust-version: {}", seen.len(), undeclared.join(", "));
    assert!(
        too_new.is_empty(),
        "dependencies newer than our rust-version {}: {too_new:?}; raise rust-version or pin older versions",
        env!("CARGO_PKG_RUST_VERSION")
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_language_features_we_use_exist_in_our_rust_version() {
    let metadata = metadata();
    let edition = ours(&metadata)["edition"].as_str().expect("an edition").to_owned();
    let ours = our_rust_version();
    let edition_needs = match edition.as_str() {
        "2015" | "2018" => (1, 31, 0),
        "2021" => (1, 56, 0),
        "2024" => (1, 85, 0),
        other => panic!("unknown edition {other}: teach this test which Rust it needs"),
    };
    assert!(ours >= edition_needs, "edition {edition} needs Rust {edition_needs:?}, rust-version says {ours:?}");

    let mut files = Vec::new();
    for dir in ["src", "examples"] {
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut files);
    }
    let let_chains: Vec<_> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap_or_default().contains("&& let "))
        .map(|f| f.display().to_string())
        .collect();
    if !let_chains.is_empty() {
        assert!(ours >= (1, 88, 0), "let chains (in {let_chains:?}) need Rust 1.88, rust-version says {ours:?}");
    }
}
