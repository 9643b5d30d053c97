//! The pure core: every decision redundo makes about copies (and about the quarantined bytes
//! `quarantine purge` may delete), as functions over plain values
//! (records and observations in, verdicts and plans out). Nothing here touches a disk, the
//! network or the clock, so each rule is tested by tables of cases.
//!
//! Imports only `record`.

pub mod assess;
pub mod durability;
pub mod pending;
pub mod plan;
pub mod purge;
pub mod shape;
pub mod vote;
