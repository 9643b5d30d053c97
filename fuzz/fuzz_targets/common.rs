//! What must hold of every manifest that `decode` accepts.

use std::path::{Component, Path};

use redundo::record::manifest::Manifest;

pub fn check_accepted(manifest: &Manifest) {
    let bytes = manifest.encode();
    let again = Manifest::decode(&bytes).expect("an accepted manifest decodes after encoding");
    assert_eq!(&again, manifest, "round trip");
    assert_eq!(again.encode(), bytes, "canonical encoding");
    let root = Path::new("/fuzz/root");
    for path in manifest.files.keys() {
        let joined = path.under(root);
        let below = joined.strip_prefix(root).expect("stays below the root");
        assert!(
            below.components().all(|c| matches!(c, Component::Normal(_))),
            "{path:?} escapes the root"
        );
        assert!(!path.as_str().contains(['\0', '\n', '\r']), "{path:?}");
        assert_ne!(path.as_str().split('/').next(), Some(".redundo"), "{path:?}");
    }
    let _ = manifest.b3sums();
}
