//! Any bytes as a manifest *body* under a valid header digest, so that the input reaches the
//! JSON parser and the validation (paths, block lists) instead of stopping at the digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redundo::record::digest::Digest;
use redundo::record::manifest::Manifest;

#[path = "common.rs"]
mod common;

fuzz_target!(|body: &[u8]| {
    let mut replica = format!("redundo-manifest 1 {}\n", Digest::of(body)).into_bytes();
    replica.extend_from_slice(body);
    if let Ok(manifest) = Manifest::decode(&replica) {
        common::check_accepted(&manifest);
    }
});
