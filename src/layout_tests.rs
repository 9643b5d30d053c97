//! Keeps the layer rule in `lib.rs` true: every `crate::` path in a layer's files must name
//! that layer or one the rule allows below it. A new import that points upward fails here.

use std::fs;
use std::path::Path;

/// Each layer (a folder, or one of the edge files) and what its files may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("commands", &["commands", "run", "store", "report", "decide", "record", "config"]),
    ("run", &["run", "store", "report", "decide", "record", "config"]),
    ("store", &["store", "record", "config"]),
    ("report", &["report", "decide", "record"]),
    ("decide", &["decide", "record"]),
    ("record", &["record"]),
    ("config", &["record", "report::exit"]),
    ("cli", &["report::exit", "decide"]),
];

fn layer_of(relative: &str) -> &str {
    relative.split(['/', '.']).next().unwrap()
}

/// Every `crate::a::b` path named in `text`, as `a::b` (or `a` when it stops there).
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let path: String =
            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        found.push(path.trim_end_matches(':').to_string());
    }
    found
}

#[test]
fn every_layer_imports_only_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if !relative.ends_with(".rs") {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(layer, _)| *layer == layer_of(&relative))
        else {
            continue; // lib.rs, main.rs and this file sit above every layer.
        };
        checked += 1;
        let text = fs::read_to_string(entry.path()).unwrap();
        for path in crate_paths(&text) {
            let ok = allowed.iter().any(|a| path == *a || path.starts_with(&format!("{a}::")));
            if !ok {
                violations.push(format!("{relative} imports crate::{path}"));
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked: has src/ moved?");
    assert!(violations.is_empty(), "imports that point upward:\n{}", violations.join("\n"));
}

#[test]
fn crate_paths_are_read_whole() {
    let text = "use crate::record::digest::Digest;\nlet x = crate::store::open_store(a);";
    assert_eq!(crate_paths(text), ["record::digest::Digest", "store::open_store"]);
}
