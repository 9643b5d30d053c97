//! Reporting, apart from the work: findings and each command's outcome as values
//! (`findings`, `outcome`), the exit codes (`exit`), progress behind a trait (`progress`, the
//! only user of indicatif), and the one writer that turns an outcome into human lines or
//! JSON (`writer`).
//!
//! Imports only `decide` and `record`, to name the values it renders.

pub mod exit;
pub mod findings;
pub mod outcome;
pub mod progress;
mod writer;

pub use writer::{
    Output, Report, blocks_text, human_bytes, is_broken_pipe, one_line, print_error_json,
};
