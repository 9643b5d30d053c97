//! Integration tests: every test drives the real `redundo` binary on fresh temporary folders.
//! All of them build into this one test binary.

mod common;

mod backup;
mod config;
mod crash;
mod features;
mod hdfs;
mod repair;
mod verify;
mod webhdfs;
