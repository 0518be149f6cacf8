//! `warden lint`: parse and validate a bundle, reporting every problem at once as `FILE:LINE:COL: /pointer: message`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use warden_core::bundle::Bundle;
use warden_core::compile::{compile, CompiledBundle};

use crate::files;
use crate::locate::locate;
use crate::Status;

/// Check a bundle: JSON syntax, the bundle format, and every validation rule.
///
/// Prints every problem at once, one per line, as `FILE:LINE:COL: /json/pointer: message`, so editors and CI can jump
/// to it. Exit 1 when there is any problem.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle (JSON, as authored).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
}

/// A bundle that parsed and validated.
pub struct Checked {
    pub bundle: Bundle,
    pub compiled: CompiledBundle,
}

/// Parses and compiles bundle JSON. `Err` holds the diagnostics, one line each, located in `text` and prefixed by
/// `name` (`name:LINE:COL: ...`).
pub fn check(name: &str, text: &str) -> std::result::Result<Checked, Vec<String>> {
    let bundle: Bundle = match serde_json::from_str(text) {
        Ok(b) => b,
        Err(e) => return Err(vec![format!("{name}:{}", files::serde_position(&e))]),
    };
    match compile(&bundle) {
        Ok(compiled) => Ok(Checked { bundle, compiled }),
        Err(errors) => Err(errors
            .0
            .iter()
            .map(|e| {
                let at = locate(text, &e.location).map_or(String::new(), |p| format!("{}:{}:", p.line, p.column));
                format!("{name}:{at} {}: {}", e.location, e.message)
            })
            .collect()),
    }
}

/// Reads and checks a bundle file; diagnostics as in [`check`].
pub fn check_file(path: &Path) -> Result<std::result::Result<Checked, Vec<String>>> {
    let bytes = files::read_bytes(path)?;
    let name = path.display().to_string();
    if files::looks_signed(&bytes) {
        return Ok(Err(vec![format!(
            "{name}: this is a signed bundle (JWS), not bundle JSON: check the JSON it was signed from, or check it \
             as a gateway does with `warden verify {name} --keys AUTHORITY.jwks.json --authority NAME`"
        )]));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(check(&name, &text)),
        Err(e) => Ok(Err(vec![format!("{name}: not UTF-8 text: {e}")])),
    }
}

/// Prints diagnostics and a count line.
pub fn report(path: &Path, diagnostics: &[String]) {
    for d in diagnostics {
        println!("{d}");
    }
    let n = diagnostics.len();
    println!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
}

pub fn run(args: &Args) -> Result<Status> {
    match check_file(&args.bundle)? {
        Ok(checked) => {
            let b = &checked.compiled;
            println!(
                "{}: ok: revision {}, {} tools, {} rules, {} issuers, authority {:?}",
                args.bundle.display(),
                b.revision,
                b.tool_count(),
                b.rules().len(),
                b.issuers.len(),
                b.authority
            );
            Ok(Status::Ok)
        }
        Err(diagnostics) => {
            report(&args.bundle, &diagnostics);
            Ok(Status::Failed)
        }
    }
}
