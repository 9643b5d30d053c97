//! Any bytes as a manifest replica: `Manifest::decode` must return a value or a defect, never
//! panic; whatever it accepts must round-trip and name only paths that stay inside a root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redundo::record::manifest::Manifest;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        common::check_accepted(&manifest);
    }
});
