//! What redundo writes down and the values those records are made of: the replicated
//! manifest, the verification ledger, the run history, BLAKE3 digests and the HDFS and S3 checksums, validated
//! relative paths, file stats and copy verdicts. Formats and their checks live here; the
//! choices made with them live in `decide`.
//!
//! The bottom layer: imports nothing else of the crate.

pub mod digest;
pub mod hdfs_checksum;
pub mod history;
pub mod manifest;
pub mod relpath;
pub mod s3_etag;
pub mod stat;
pub mod verdict;
pub mod verified;
