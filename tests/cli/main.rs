//! Integration tests: every test drives the real `redundo` binary on fresh temporary folders.
//! All of them build into this one test binary.

mod common;

mod backup;
mod between_runs;
mod config;
mod crash;
mod faults;
mod features;
mod hdfs;
mod hostile;
mod operations;
mod props;
mod records;
mod recovery;
mod repair;
mod s3;
mod shape;
mod stateful;
mod symlinks;
mod trust;
mod verify;
mod webhdfs;
