//! `warden fmt`: the canonical formatting of policy JSON files (bundles, cases): two-space indentation, members in
//! sorted order, one trailing newline. `--check` reports files that are not canonical, for CI.

use std::path::PathBuf;

use anyhow::Result;
use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::files;
use crate::Status;

/// Format policy JSON files canonically (or check that they are, with --check).
///
/// Canonical: two-space indentation, object members sorted by name, no trailing spaces, one final newline; the
/// values are unchanged. A file that is not JSON, or has a member name twice in one object (which a JSON parser
/// would silently resolve to one of them), is refused with its line and column and left as it is.
/// With --check nothing is written: each file that would change is listed, and the exit code is 1.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The files (bundle JSON, cases files).
    #[arg(value_name = "FILE.json", required = true)]
    files: Vec<PathBuf>,
    /// Only check; exit 1 when a file is not canonical.
    #[arg(long)]
    check: bool,
}

/// Refuses duplicate member names anywhere in a document (serde_json keeps the last one silently).
struct NoDuplicates;

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("the member {key:?} appears twice in one object")));
            }
            map.next_value::<Checked>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(NoDuplicates).map(|()| Checked)
    }
}

/// Checks that `text` is one JSON document with no member name twice in an object; `Err` is `LINE:COL: why`.
pub fn no_duplicates(text: &str) -> std::result::Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(NoDuplicates).and_then(|()| de.end()).map_err(|e| files::serde_position(&e))
}

/// `v` with every object's members in name order. Explicit, because serde_json's map keeps insertion order when
/// its `preserve_order` feature is on (another crate of the workspace can turn it on for every build).
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(String, Value)> = map.into_iter().collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(members.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The canonical text of a JSON document, or `LINE:COL: why` when it cannot be formatted.
pub fn canonical(text: &str) -> std::result::Result<String, String> {
    no_duplicates(text)?;
    let value: Value = serde_json::from_str(text).map_err(|e| files::serde_position(&e))?;
    let mut out = serde_json::to_string_pretty(&sorted(value)).map_err(|e| e.to_string())?;
    out.push('\n');
    Ok(out)
}

pub fn run(args: &Args) -> Result<Status> {
    let mut status = Status::Ok;
    for path in &args.files {
        let text = files::read_text(path)?;
        let formatted = match canonical(&text) {
            Ok(f) => f,
            Err(why) => {
                println!("{}:{why}", path.display());
                status = Status::Failed;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            println!("{}: not canonical (run `warden fmt {}`)", path.display(), path.display());
            status = Status::Failed;
        } else {
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path)?.permissions()) & 0o7777;
            files::write_atomic(path, formatted.as_bytes(), mode)?;
            println!("{}: formatted", path.display());
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_indents_and_keeps_values() {
        assert_eq!(canonical("{\"b\":[1,2.5,{\"d\":null,\"c\":\"x\"}],\"a\":true}").unwrap(),
            "{\n  \"a\": true,\n  \"b\": [\n    1,\n    2.5,\n    {\n      \"c\": \"x\",\n      \"d\": null\n    }\n  ]\n}\n");
        let once = canonical("{\"z\": {}, \"$schema\": \"s\"}").unwrap();
        assert_eq!(canonical(&once).unwrap(), once);
        assert!(once.starts_with("{\n  \"$schema\""));
    }

    #[test]
    fn refuses_duplicates_and_non_json() {
        assert_eq!(
            canonical("{\"a\": 1,\n \"b\": {\"c\": 1, \"c\": 2}}").unwrap_err(),
            "2:18: the member \"c\" appears twice in one object"
        );
        assert!(canonical("{\"a\": 1,}").unwrap_err().starts_with("1:9: "));
        assert!(canonical("{} {}").is_err());
    }
}
