//! Validation and compilation of the bundle's `limits`: ids, tool selectors expanded against the catalog, the `per`
//! key, the window, and exactly one of `max_calls` and `budget` (its argument's JSON Pointer and maximum), into
//! [`crate::limits::Limits`] indexed by tool.

use crate::args::parse_pointer;
use crate::bundle::{Bundle, Limit as AuthoredLimit};
use crate::fxhash::FxHashMap;
use crate::limits::{units_of, Kind, Limit, Limits, MAX_AMOUNT, MAX_WINDOW_SECONDS};
use crate::vocab::valid_id;

use super::catalog::Catalog;
use super::rules::select_tools;
use super::{bad_id, Loc};

pub(super) fn limits(bundle: &Bundle, catalog: &Catalog<'_>, err: &mut impl FnMut(String, String)) -> Limits {
    let mut ids: FxHashMap<&str, usize> = FxHashMap::default();
    let mut list = Vec::with_capacity(bundle.limits.len());
    let mut by_tool: Vec<Vec<u32>> = vec![Vec::new(); bundle.tools.len()];
    for (li, l) in bundle.limits.iter().enumerate() {
        let at = Loc(&"", "/limits", li);
        if !valid_id(&l.id) {
            err(format!("{at}/id"), bad_id(&l.id));
        } else if let Some(first) = ids.get(l.id.as_str()) {
            err(format!("{at}/id"), format!("duplicate limit id \"{}\" (first defined at /limits/{first})", l.id));
        } else {
            ids.insert(&l.id, li);
        }
        let tools = selected_tools(bundle, l, &at, catalog, err);
        for (ki, k) in l.per.iter().enumerate() {
            if l.per[..ki].contains(k) {
                err(format!("{at}/per/{ki}"), format!("\"{}\" is named twice", k.as_str()));
            }
        }
        if l.window_seconds == 0 {
            err(format!("{at}/window_seconds"), "must be at least 1".into());
        } else if l.window_seconds > MAX_WINDOW_SECONDS {
            err(
                format!("{at}/window_seconds"),
                format!("must be at most {MAX_WINDOW_SECONDS} (31 days), found {}", l.window_seconds),
            );
        }
        let kind = match (l.max_calls, &l.budget) {
            (Some(_), Some(_)) | (None, None) => {
                err(at.to_string(), "give exactly one of max_calls (a rate limit) and budget".into());
                None
            }
            (Some(0), None) => {
                err(format!("{at}/max_calls"), "must be at least 1".into());
                None
            }
            (Some(max), None) => Some(Kind::Calls { max }),
            (None, Some(b)) => {
                let pointer = match parse_pointer(&b.argument) {
                    Ok(p) => Some(p),
                    Err(m) => {
                        err(format!("{at}/budget/argument"), m);
                        None
                    }
                };
                let max = match units_of(b.max) {
                    Some(0) => {
                        err(format!("{at}/budget/max"), "must be more than 0".into());
                        None
                    }
                    Some(units) => Some(units),
                    None => {
                        err(
                            format!("{at}/budget/max"),
                            format!("must be a number from 0 to {MAX_AMOUNT:.0} with at most 6 decimal places"),
                        );
                        None
                    }
                };
                for &t in &tools {
                    if let Some(tool) = bundle.tools.get(t as usize).filter(|tool| !tool.http.is_empty()) {
                        err(
                            format!("{at}/tools"),
                            format!(
                                "a budget sums an argument of MCP tools/call: tool \"{}\" has HTTP routes, whose \
                                 calls carry no arguments",
                                tool.id
                            ),
                        );
                    }
                }
                pointer.zip(max).map(|(pointer, max)| Kind::Budget {
                    argument: b.argument.as_str().into(),
                    pointer,
                    max,
                })
            }
        };
        let Some(kind) = kind else { continue };
        let index = list.len() as u32;
        for &t in &tools {
            if let Some(slot) = by_tool.get_mut(t as usize) {
                slot.push(index);
            }
        }
        list.push(Limit {
            id: l.id.as_str().into(),
            per: l.per.clone().into_boxed_slice(),
            window: i64::try_from(l.window_seconds).unwrap_or(i64::MAX),
            kind,
            owner: l.owner.as_deref().map(Into::into),
        });
    }
    Limits::new(list, by_tool.into_iter().map(Vec::into_boxed_slice).collect())
}

/// The catalog indexes of the tools a limit selects (`*`: every tool), through the rules' selector expansion.
fn selected_tools(
    bundle: &Bundle,
    l: &AuthoredLimit,
    at: &Loc<'_>,
    catalog: &Catalog<'_>,
    err: &mut impl FnMut(String, String),
) -> Vec<u32> {
    if l.tools.is_empty() {
        err(format!("{at}/tools"), "must name at least one tool (or \"*\" for every tool)".into());
        return Vec::new();
    }
    if l.tools.iter().any(|t| t == "*") {
        return (0..bundle.tools.len() as u32).collect();
    }
    select_tools(&l.tools, &format_args!("{at}/tools"), catalog, err).0
}
