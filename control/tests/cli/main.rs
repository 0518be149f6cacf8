//! The integration tests of the `warden` CLI, as one test binary (one link; one support module, one artifact
//! locator): each module is one area of commands, `support` is shared, `fixtures/` holds data files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

mod approve_and_report;
mod keys_and_signatures;
mod lint;
mod oci;
mod owner_commands;
mod pin;
mod policy_tests_and_eval;
mod schemas;
mod serve;
mod serve_limits;
