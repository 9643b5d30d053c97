//! Any text as `redundo.toml`: `Config::from_text` must accept it or refuse it with an error,
//! never panic; whatever it accepts must satisfy the config's documented rules.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redundo::config::{Config, Location};

/// A folder with a `data/` source in it, made once; the config file is "in" it.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("redundo-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = base().join("redundo.toml");
    let Ok(config) = Config::from_text(&file, text) else { return };
    assert!(!config.targets.is_empty(), "a config without targets was accepted");
    assert!(
        (1..=config.targets.len()).contains(&config.min_copies),
        "min_copies {} with {} targets",
        config.min_copies,
        config.targets.len()
    );
    let mut names = std::collections::BTreeSet::new();
    for target in &config.targets {
        assert!(names.insert(target.name.clone()), "duplicate target name {:?}", target.name);
        assert!(
            !target.name.is_empty()
                && target.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "target name {:?}",
            target.name
        );
        // Local folders must not overlap the source or hold the state folder.
        #[allow(irrefutable_let_patterns)]
        let Location::Local(root) = &target.location else { continue };
        let (root, state) = (real(root), real(&config.state_dir));
        assert!(!state.starts_with(&root), "state_dir {state:?} inside target {root:?}");
        // An HDFS source cannot overlap a local folder.
        let Some(source) = config.local_source() else { continue };
        let source = real(source);
        assert!(!root.starts_with(&source), "target {root:?} inside the source {source:?}");
        assert!(!source.starts_with(&root), "source {source:?} inside target {root:?}");
    }
});

/// The canonical path, for a path whose tail may not exist: the longest existing prefix
/// canonicalized, the rest normalized lexically.
fn real(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut tail = Vec::new();
    while existing.canonicalize().is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for part in tail.iter().rev() {
        match part.to_str() {
            Some("..") => {
                out.pop();
            }
            Some(".") => {}
            _ => out.push(part),
        }
    }
    out
}
