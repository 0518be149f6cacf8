//! Validation of the bundle's header, its exception policy and its tool catalog: the tool ids, the HTTP route table
//! and the namespace index that `namespace.*` selectors are looked up in.

use std::collections::HashMap;

use crate::bundle::{Bundle, ExceptionPolicy, FORMAT_V1};
use crate::fxhash::FxHashMap;
use crate::route::{self, RouteTable};
use crate::time::parse_rfc3339;
use crate::vocab::{valid_id, ToolIdx};

use super::{bad_id, bad_time, Loc, EMPTY_STRING, MAX_EXCEPTION_DAYS};

/// The header's times: `issued_at` and `expires_at`, `None` where invalid (reported).
pub(super) fn header(bundle: &Bundle, err: &mut impl FnMut(String, String)) -> (Option<i64>, Option<i64>) {
    if bundle.format != FORMAT_V1 {
        err("/format".into(), format!("unsupported format \"{}\": expected \"{FORMAT_V1}\"", bundle.format));
    }
    let issued_at = parse_rfc3339(&bundle.issued_at);
    if issued_at.is_none() {
        err("/issued_at".into(), bad_time(&bundle.issued_at));
    }
    let expires_at = parse_rfc3339(&bundle.expires_at);
    if expires_at.is_none() {
        err("/expires_at".into(), bad_time(&bundle.expires_at));
    }
    if let (Some(i), Some(e)) = (issued_at, expires_at) {
        if e <= i {
            err("/expires_at".into(), "must be later than issued_at".into());
        }
    }
    if bundle.owner.trim().is_empty() {
        err("/owner".into(), EMPTY_STRING.into());
    }
    if bundle.authority.trim().is_empty() {
        err("/authority".into(), EMPTY_STRING.into());
    }
    (issued_at, expires_at)
}

/// What every exception must respect, checked.
pub(super) struct ExceptionLimits {
    pub(super) max_days: u32,
    /// `max_days` is within bounds (else durations are not checked against it).
    pub(super) max_days_ok: bool,
    /// `exception_policy.environments`.
    pub(super) environments: Option<Box<[Box<str>]>>,
}

pub(super) fn exception_limits(policy: &ExceptionPolicy, err: &mut impl FnMut(String, String)) -> ExceptionLimits {
    let max_days = policy.max_duration_days;
    let max_days_ok = (1..=MAX_EXCEPTION_DAYS).contains(&max_days);
    if !max_days_ok {
        err(
            "/exception_policy/max_duration_days".into(),
            format!("must be 1 to {MAX_EXCEPTION_DAYS}, found {max_days}"),
        );
    }
    let environments: Option<Box<[Box<str>]>> = match &policy.environments {
        None => None,
        Some(list) => {
            if list.is_empty() {
                err(
                    "/exception_policy/environments".into(),
                    "empty list: omit the field to allow exceptions in every environment".into(),
                );
            }
            for (i, e) in list.iter().enumerate() {
                if e.is_empty() {
                    err(format!("/exception_policy/environments/{i}"), EMPTY_STRING.into());
                }
            }
            Some(list.iter().map(|e| e.as_str().into()).collect())
        }
    };
    ExceptionLimits { max_days, max_days_ok, environments }
}

/// The tool catalog, checked and indexed.
pub(super) struct Catalog<'b> {
    /// Tool id → index (the first definition of each valid id).
    pub(super) tool_ids: HashMap<String, ToolIdx, crate::fxhash::FxBuild>,
    pub(super) routes: RouteTable,
    /// Every namespace prefix of every tool id (`a` and `a.b` for `a.b.c`) to its tools, so that each `ns.*`
    /// selector is one lookup.
    pub(super) namespaces: FxHashMap<&'b str, Vec<u32>>,
}

pub(super) fn catalog<'b>(bundle: &'b Bundle, err: &mut impl FnMut(String, String)) -> Catalog<'b> {
    let mut tool_ids: HashMap<String, ToolIdx, crate::fxhash::FxBuild> = HashMap::default();
    let mut routes = RouteTable::default();
    for (ti, tool) in bundle.tools.iter().enumerate() {
        let at = Loc(&"", "/tools", ti);
        if !valid_id(&tool.id) {
            err(format!("{at}/id"), bad_id(&tool.id));
        } else if let Some(first) = tool_ids.get(&tool.id) {
            err(format!("{at}/id"), format!("duplicate tool id \"{}\" (first defined at /tools/{})", tool.id, first.0));
        } else {
            tool_ids.insert(tool.id.clone(), ToolIdx(ti as u32));
        }
        for (hi, m) in tool.http.iter().enumerate() {
            let hat = Loc(&at, "/http", hi);
            let host = route::host_field(m.host.as_deref()).map_err(|e| err(format!("{hat}/host"), e)).ok();
            let mut methods_ok = true;
            for (mi, method) in m.methods.iter().enumerate() {
                if !route::valid_method(method) {
                    methods_ok = false;
                    err(
                        format!("{hat}/methods/{mi}"),
                        format!("invalid method \"{method}\": use an upper-case HTTP method such as \"GET\""),
                    );
                }
            }
            let path = match route::parse_path(&m.path) {
                Ok(p) => Some(p),
                Err(detail) => {
                    err(format!("{hat}/path"), format!("invalid path pattern \"{}\": {detail}", m.path));
                    None
                }
            };
            if let (Some(host), Some(path), true) = (host, path, methods_ok) {
                if let Err((oti, ohi)) =
                    routes.insert(&host, &m.methods, &path, ToolIdx(ti as u32), (ti as u32, hi as u32))
                {
                    let other = bundle.tools.get(oti as usize).map(|t| t.id.as_str()).unwrap_or("");
                    err(
                        hat.to_string(),
                        format!(
                            "ambiguous route: same host, method and path as /tools/{oti}/http/{ohi} (tool \"{other}\")"
                        ),
                    );
                }
            }
        }
    }
    let mut namespaces: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
    for (ti, tool) in bundle.tools.iter().enumerate() {
        let id = tool.id.as_str();
        for (p, b) in id.bytes().enumerate() {
            if b == b'.' && p + 1 < id.len() {
                namespaces.entry(&id[..p]).or_default().push(ti as u32);
            }
        }
    }
    Catalog { tool_ids, routes, namespaces }
}
