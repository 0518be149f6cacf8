//! `warden`: the command-line tool for policy owners (keygen, init, lint, fmt, test, sign, verify, publish, eval,
//! serve, approve, token, report, diff, oci, pin).
//!
//! Arguments are parsed by clap into [`Cli`], each subcommand lives in its own module and returns a [`Status`];
//! errors that are not the checked thing failing (bad arguments, unreadable files) travel as `anyhow` errors and end
//! the process with exit code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approve;
mod cases;
mod diff;
mod eval;
mod files;
mod fmt;
mod init;
mod keygen;
mod lint;
mod locate;
mod oci;
mod pin;
mod publish;
mod report;
mod schema;
mod serve;
mod sign;
mod suggest;
mod token;

/// What a subcommand concluded, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0: everything checked out.
    Ok,
    /// Exit 1: the checked thing failed (lint errors, test failures, a refused signature, an unexpected decision).
    Failed,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the checked thing failed: lint errors, failing policy tests, a bundle that does not verify,
     a refused signing, an `eval --expect` that did not hold, or a bundle `report` cannot validate
  2  usage or I/O error: bad arguments, unreadable or malformed input files, a port that cannot be bound,
     or an approval `approve` refuses to mint";

/// Warden policy tool: author, test, sign, verify, review and publish policy bundles.
#[derive(Debug, Parser)]
#[command(name = "warden", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Lint(lint::Args),
    Test(cases::Args),
    Sign(sign::SignArgs),
    Verify(sign::VerifyArgs),
    Eval(eval::Args),
    Serve(serve::Args),
    Approve(approve::Args),
    Report(report::Args),
    Oci(oci::Args),
    Fmt(fmt::Args),
    Token(token::Args),
    Publish(publish::Args),
    Init(init::Args),
    Diff(diff::Args),
    Pin(pin::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::Test(args) => cases::run(&args),
        Command::Sign(args) => sign::sign(&args),
        Command::Verify(args) => sign::verify(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Approve(args) => approve::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Oci(args) => oci::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Publish(args) => publish::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Pin(args) => pin::run(&args),
    };
    match result {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("warden: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
