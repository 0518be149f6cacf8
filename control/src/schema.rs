//! JSON Schema checks of policy files: every violation at once, as a JSON pointer and a message a person can act on.
//!
//! The schemas under `policies/` are the editor's view of each format; they are embedded here so that `warden lint`
//! runs the same checks over the raw document (serde stops at the first shape error; the schema pass reports all of
//! them). Messages: a schema node may carry `errorMessage` (used for an error of that node's own keywords) and
//! `patternErrorMessage` (for its `pattern`), the two keywords VS Code's JSON language service also shows; otherwise
//! the message is built from the kind of error. Unknown members and misspelt enumerated values get a "did you mean".
//! A constraint that needs its own message lives in its own `allOf` entry with that `errorMessage`.

use anyhow::{anyhow, Result};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::suggest::did_you_mean;

/// `policies/bundle.schema.json`.
pub const BUNDLE: &str = include_str!("../../policies/bundle.schema.json");

/// One violation: where (a JSON pointer into the checked document) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pointer: String,
    pub message: String,
}

/// A compiled schema and its text (for the messages its nodes carry).
pub struct Schema {
    doc: Value,
    validator: Validator,
}

impl Schema {
    /// Compiles a JSON Schema (draft 2020-12).
    pub fn parse(text: &str) -> Result<Schema> {
        let doc: Value = serde_json::from_str(text).map_err(|e| anyhow!("schema is not JSON: {e}"))?;
        let validator = jsonschema::draft202012::new(&doc).map_err(|e| anyhow!("schema does not compile: {e}"))?;
        Ok(Schema { doc, validator })
    }

    /// The bundle schema.
    pub fn bundle() -> Result<Schema> {
        Schema::parse(BUNDLE)
    }

    /// Every violation in `instance`, in the order the validator found them, without repeats.
    pub fn check(&self, instance: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in self.validator.iter_errors(instance) {
            self.render(&e, &mut out);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|f| seen.insert((f.pointer.clone(), f.message.clone())));
        out
    }

    /// The schema node whose keyword raised `e` (the keyword's parent object).
    fn node(&self, e: &ValidationError<'_>) -> Option<&Value> {
        let absolute = e.absolute_keyword_location().map(|u| u.as_str().to_string());
        let keyword_path = match absolute.as_deref().and_then(|u| u.split_once('#')) {
            Some((_, fragment)) => fragment.to_string(),
            None => e.schema_path().as_str().to_string(),
        };
        let (parent, _) = keyword_path.rsplit_once('/')?;
        self.doc.pointer(&unpercent(parent))
    }

    fn render(&self, e: &ValidationError<'_>, out: &mut Vec<Finding>) {
        let at = e.instance_path().as_str().to_string();
        let node = self.node(e);
        let custom = node.and_then(|n| n.get("errorMessage")).and_then(Value::as_str).map(str::to_string);
        let instance: &Value = e.instance();
        let mut push = |pointer: String, message: String| out.push(Finding { pointer, message });
        let message = match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let mut known: Vec<&str> = node
                    .and_then(|n| n.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                known.sort_unstable();
                for name in unexpected {
                    let hint = match did_you_mean(name, known.iter().copied()) {
                        h if !h.is_empty() => h,
                        _ if known.is_empty() => String::new(),
                        _ => format!(" (the fields here: {})", known.join(", ")),
                    };
                    push(child(&at, name), format!("unknown field \"{name}\"{hint}"));
                }
                return;
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                push(
                    child(&at, name),
                    format!("missing: {}", custom.unwrap_or_else(|| "this field is required".to_string())),
                );
                return;
            }
            ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context }
                if custom.is_none() =>
            {
                let fitting: Vec<&Vec<ValidationError<'static>>> =
                    context.iter().filter(|branch| !type_mismatch(branch, &at)).collect();
                match fitting.first() {
                    Some(branch) => {
                        for sub in branch.iter() {
                            self.render(sub, out);
                        }
                        return;
                    }
                    None => {
                        let mut expected: Vec<&str> = Vec::new();
                        for err in context.iter().flatten() {
                            if let ValidationErrorKind::Type { kind } = err.kind() {
                                expected.extend(type_names(kind));
                            }
                        }
                        expected.dedup();
                        format!("expected {}, found {}", expected.join(" or "), warden_core::config::kind(instance))
                    }
                }
            }
            ValidationErrorKind::Pattern { pattern } => {
                let why = node
                    .and_then(|n| n.get("patternErrorMessage"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or(custom)
                    .unwrap_or_else(|| format!("does not match the pattern {pattern}"));
                format!("{}: {why}", show(instance))
            }
            ValidationErrorKind::Enum { options } => {
                let choices: Vec<&Value> = options.as_array().map(|a| a.iter().collect()).unwrap_or_default();
                let hint = instance
                    .as_str()
                    .map(|s| did_you_mean(s, choices.iter().filter_map(|c| c.as_str())))
                    .unwrap_or_default();
                let listed: Vec<String> = choices.iter().map(|c| show(c)).collect();
                match custom {
                    Some(c) => format!("{}: {c}{hint}", show(instance)),
                    None => format!("{} is not one of {}{hint}", show(instance), listed.join(", ")),
                }
            }
            _ if custom.is_some() => custom.unwrap_or_default(),
            ValidationErrorKind::Constant { expected_value } => format!("must be {}", show(expected_value)),
            ValidationErrorKind::Type { kind } => {
                format!("expected {}, found {}", type_names(kind).join(" or "), warden_core::config::kind(instance))
            }
            ValidationErrorKind::MinItems { limit: 1 } => "must not be an empty list".to_string(),
            ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
            ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
            ValidationErrorKind::MinLength { limit: 1 } => "must not be empty".to_string(),
            ValidationErrorKind::MinLength { limit } => format!("must be at least {limit} characters"),
            ValidationErrorKind::MaxLength { limit } => format!("must be at most {limit} characters"),
            ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}, found {}", show(instance)),
            ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}, found {}", show(instance)),
            ValidationErrorKind::ExclusiveMinimum { limit } => {
                format!("must be more than {limit}, found {}", show(instance))
            }
            ValidationErrorKind::ExclusiveMaximum { limit } => {
                format!("must be less than {limit}, found {}", show(instance))
            }
            ValidationErrorKind::Not { .. } | ValidationErrorKind::FalseSchema => "not allowed here".to_string(),
            ValidationErrorKind::OneOfMultipleValid { .. } => "matches more than one of the allowed forms".to_string(),
            _ => e.to_string(),
        };
        push(at, message);
    }
}

/// Does this `anyOf` / `oneOf` branch fail only because the value at `at` has another type?
fn type_mismatch(branch: &[ValidationError<'_>], at: &str) -> bool {
    !branch.is_empty()
        && branch
            .iter()
            .all(|e| matches!(e.kind(), ValidationErrorKind::Type { .. }) && e.instance_path().as_str() == at)
}

fn type_names(kind: &TypeKind) -> Vec<&'static str> {
    let article = |t: jsonschema::types::JsonType| match t.as_str() {
        "array" => "an array",
        "boolean" => "true or false",
        "integer" => "an integer",
        "null" => "null",
        "number" => "a number",
        "object" => "an object",
        _ => "a string",
    };
    match kind {
        TypeKind::Single(t) => vec![article(*t)],
        TypeKind::Multiple(set) => set.iter().map(article).collect(),
    }
}

/// A value as it is written, shortened when long.
fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 60 {
        return text;
    }
    let head: String = text.chars().take(57).collect();
    format!("{head}...")
}

/// The pointer of member `name` of the value at `at`.
fn child(at: &str, name: &str) -> String {
    format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// Percent-decoding of a URI fragment (a JSON pointer in a URI: `$defs` may come as `%24defs`).
fn unpercent(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) =
            (b[i], b.get(i + 1).map(|c| hex(*c)), b.get(i + 2).map(|c| hex(*c)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(schema: &Value, instance: &Value) -> Vec<(String, String)> {
        let s = Schema::parse(&schema.to_string()).unwrap();
        s.check(instance).into_iter().map(|f| (f.pointer, f.message)).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect()
    }

    #[test]
    fn every_error_with_its_pointer_and_a_plain_message() {
        let schema = json!({
            "$id": "https://warden.test/s.json",
            "type": "object",
            "additionalProperties": false,
            "required": ["id", "effect"],
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z]+$", "patternErrorMessage": "use lower-case letters"},
                "effect": {"$ref": "#/$defs/effect"},
                "agents": {"anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1}, {"type": "null"}]},
                "max": {"type": "integer", "maximum": 10}
            },
            "$defs": {"effect": {"enum": ["allow", "deny", "step_up"]}}
        });
        let got = findings(&schema, &json!({"id": "Bad", "effect": "alow", "agent": [], "agents": [1], "max": 11}));
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(
            got_sorted,
            pairs(&[
                ("/agent", "unknown field \"agent\": did you mean \"agents\"?"),
                ("/agents/0", "expected a string, found a number"),
                ("/effect", "\"alow\" is not one of \"allow\", \"deny\", \"step_up\": did you mean \"allow\"?"),
                ("/id", "\"Bad\": use lower-case letters"),
                ("/max", "must be at most 10, found 11"),
            ])
        );
        let mut got = findings(&schema, &json!({"agents": "x"}));
        got.sort();
        assert_eq!(
            got,
            pairs(&[
                ("/agents", "expected an array or null, found a string"),
                ("/effect", "missing: this field is required"),
                ("/id", "missing: this field is required"),
            ])
        );
        assert_eq!(
            findings(&schema, &json!({"id": "a", "effect": "deny", "other": 1})),
            pairs(&[("/other", "unknown field \"other\" (the fields here: agents, effect, id, max)")])
        );
    }

    #[test]
    fn error_messages_of_schema_nodes_are_used() {
        let schema = json!({
            "$id": "https://warden.test/m.json",
            "type": "object",
            "properties": {"effect": {"type": "string"}, "step_up": {"type": ["object", "null"]}},
            "allOf": [
                {
                    "if": {"required": ["effect"], "properties": {"effect": {"const": "step_up"}}},
                    "then": {"required": ["step_up"], "errorMessage": "a step_up rule must name its approvers"},
                    "else": {"properties": {"step_up": {"type": "null", "errorMessage": "only step_up rules can have step_up"}}}
                }
            ]
        });
        assert_eq!(
            findings(&schema, &json!({"effect": "step_up"})),
            pairs(&[("/step_up", "missing: a step_up rule must name its approvers")])
        );
        assert_eq!(
            findings(&schema, &json!({"effect": "allow", "step_up": {}})),
            pairs(&[("/step_up", "only step_up rules can have step_up")])
        );
        assert!(findings(&schema, &json!({"effect": "allow", "step_up": null})).is_empty());
    }

    #[test]
    fn the_bundle_schema_compiles_and_accepts_the_examples() {
        let s = Schema::bundle().unwrap();
        for name in ["coding-agent.json", "finance-agent.json", "support-agent.json"] {
            let path = format!("{}/../policies/examples/{name}", env!("CARGO_MANIFEST_DIR"));
            let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(s.check(&v), Vec::new(), "{name}");
        }
    }

    #[test]
    fn fragments_are_unescaped() {
        assert_eq!(unpercent("/%24defs/rule"), "/$defs/rule");
        assert_eq!(unpercent("/a%2"), "/a%2");
        assert_eq!(unpercent("/plain"), "/plain");
    }
}
