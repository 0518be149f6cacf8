//! The structure rules of the workspace, checked on its files (in the style of rust-analyzer's `xtask/src/tidy.rs`):
//! the core depends on no proxy-wasm or wasmtime crate; no filter module decides (it uses only the core's gate and
//! distribution modules); no crate has an import cycle between sibling modules; every module opens with `//!`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The crates whose source the rules cover.
const CRATES: &[&str] = &[
    "plugin/core",
    "plugin/filter",
    "control",
    "benches",
    "benches/fixtures",
    "benches/peers",
    "benches/probe",
    "host-tests",
];

#[test]
fn the_core_depends_on_no_proxy_wasm_or_wasmtime_crate() {
    // Cargo.lock: every package with its dependencies (a name, or "name version" when several versions exist).
    let lock = read(&root().join("Cargo.lock"));
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field =
            |k: &str| block.lines().find_map(|l| l.strip_prefix(&format!("{k} = \""))).map(|v| v.trim_end_matches('"'));
        let (name, version) = (field("name").unwrap(), field("version").unwrap());
        let list: Vec<String> = match block.find("dependencies = [") {
            Some(at) => block[at..]
                .lines()
                .skip(1)
                .take_while(|l| !l.starts_with(']'))
                .map(|l| l.trim().trim_matches(|c| c == '"' || c == ',').to_string())
                .collect(),
            None => Vec::new(),
        };
        deps.insert(name.to_string(), list.clone());
        deps.insert(format!("{name} {version}"), list);
    }
    assert!(deps.contains_key("warden-core"), "Cargo.lock has no warden-core");
    let mut seen = BTreeSet::new();
    let mut todo = vec!["warden-core".to_string()];
    while let Some(p) = todo.pop() {
        // "name version (source)" → "name version"
        let key: String = p.split(" (").next().unwrap().to_string();
        if seen.insert(key.clone()) {
            todo.extend(deps.get(&key).cloned().unwrap_or_default());
        }
    }
    let host: Vec<&String> = seen
        .iter()
        .filter(|p| p.starts_with("proxy-wasm") || p.starts_with("wasmtime") || p.starts_with("wasmer"))
        .collect();
    assert!(host.is_empty(), "warden-core must stay host-independent; it reaches {host:?}");
    assert!(seen.len() > 10, "the walk of Cargo.lock found only {seen:?}");
}

/// The core's modules the filter may use: the gate, the configuration, bundle activation and polling, ids, the
/// token cache, and the types and clock formatting those speak. Deciding modules (`decide`, `decision`, `mcp`,
/// `approval`, `identity`, `path`, `compile`, `args`, ...) are the gate's.
const FILTER_MAY_USE: &[&str] = &["gate", "config", "activation", "poll", "ids", "token_cache", "facts", "time"];

/// Source without comments (line comments, doc comments) and without the `#[cfg(test)]` module at the end.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

#[test]
fn no_filter_module_decides() {
    let files = rust_files(&root().join("plugin/filter/src"));
    assert!(files.len() >= 3, "{files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let code = code(&read(file));
        for (at, _) in code.match_indices("warden_core::") {
            let rest = &code[at + "warden_core::".len()..];
            let modules: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(|s| s.trim().split("::").next().unwrap().to_string()).collect()
            } else {
                vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap().to_string()]
            };
            for m in modules.into_iter().filter(|m| !m.is_empty()) {
                if !FILTER_MAY_USE.contains(&m.as_str()) {
                    problems.push(format!("{}: uses warden_core::{m}", file.display()));
                }
            }
        }
        for word in ["Reason::", "Outcome::", "decide("] {
            if code.contains(word) {
                problems.push(format!("{}: names {word} (deciding is the gate's)", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "the filter only carries out the gate's steps:\n{}", problems.join("\n"));
}

/// A crate's modules by path (`[]` is the crate root), from its `src/` files.
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut path: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        if path.first().is_some_and(|p| p == "bin") {
            continue; // a binary is a crate of its own
        }
        if path.last().is_some_and(|p| p == "mod") {
            path.pop();
        }
        if path == ["lib"] || path == ["main"] {
            path.clear();
        }
        out.insert(path, code(&read(&file)));
    }
    out
}

/// The module paths a module's code names through `crate::` and `super::` (grouped imports expanded one level).
fn references(path: &[String], code: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.is_empty();
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" { Vec::new() } else { path[..path.len() - 1].to_vec() };
            let mut rest = &code[at + start.len()..];
            let mut segs = Vec::new();
            loop {
                if let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                    continue;
                }
                if let Some(group) = rest.strip_prefix('{') {
                    let mut depth = 1;
                    let end = group
                        .char_indices()
                        .find(|&(_, c)| {
                            depth += match c {
                                '{' => 1,
                                '}' => -1,
                                _ => 0,
                            };
                            depth == 0
                        })
                        .map_or(group.len(), |(i, _)| i);
                    let mut level = 0;
                    let mut item = String::new();
                    let mut items = Vec::new();
                    for c in group[..end].chars() {
                        match c {
                            '{' => level += 1,
                            '}' => level -= 1,
                            ',' if level == 0 => items.push(std::mem::take(&mut item)),
                            _ if level == 0 => item.push(c),
                            _ => {}
                        }
                    }
                    items.push(item);
                    for i in items {
                        let first = i.trim().split("::").next().unwrap().trim().to_string();
                        let mut p = [base.clone(), segs.clone()].concat();
                        if first != "self" && ident(&first) {
                            p.push(first);
                        }
                        out.push(p);
                    }
                    break;
                }
                let seg: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if seg.is_empty() {
                    out.push([base.clone(), segs.clone()].concat());
                    break;
                }
                rest = &rest[seg.len()..];
                segs.push(seg);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => {
                        out.push([base.clone(), segs.clone()].concat());
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Cycles between sibling modules: `a` uses `b` when code anywhere under `a` names something under `b`.
fn cycles(src: &Path) -> Vec<String> {
    let mods = modules(src);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (path, code) in &mods {
        for r in references(path, code) {
            let Some(target) = mods.keys().filter(|k| r.starts_with(k)).max_by_key(|k| k.len()) else { continue };
            let common = path.iter().zip(target).take_while(|(a, b)| a == b).count();
            if common < path.len() && common < target.len() {
                edges.entry(path[..=common].to_vec()).or_default().insert(target[..=common].to_vec());
            }
        }
    }
    let mut found = Vec::new();
    for start in edges.keys() {
        // A path back to `start` through its siblings.
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(trail) = stack.pop() {
            for next in edges.get(trail.last().unwrap()).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail.iter().chain([start]).map(|p| p.join("::")).collect();
                    found.push(format!("{}: {}", src.display(), names.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    stack.push([trail.clone(), vec![next.clone()]].concat());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut problems = Vec::new();
    let mut n = 0;
    for krate in CRATES {
        let src = root().join(krate).join("src");
        assert!(src.is_dir(), "{}", src.display());
        // The library (or main binary), then each binary with modules of its own (`src/bin/<name>/main.rs`).
        let mut roots = vec![src.clone()];
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            roots.extend(bins.map(|b| b.unwrap().path()).filter(|p| p.join("main.rs").is_file()));
        }
        for dir in roots {
            n += 1;
            problems.extend(cycles(&dir));
        }
    }
    assert!(n > CRATES.len(), "no binary with modules of its own was checked ({n} roots)");
    assert!(
        problems.is_empty(),
        "import cycles (move what both sides need into a leaf module):\n{}",
        problems.join("\n")
    );
    // The check sees a cycle: two modules that name each other.
    let dir = std::env::temp_dir().join(format!("warden-tidy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.rs"), "//! x\nmod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "//! a\nuse crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(dir.join("b.rs"), "//! b\nuse crate::{a::A, c};\npub struct B;\n").unwrap();
    let seen = cycles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn every_module_opens_with_a_doc_line() {
    let dirs: Vec<PathBuf> = CRATES.iter().map(|c| root().join(c)).collect();
    let mut missing = Vec::new();
    let mut n = 0;
    for dir in dirs {
        for file in rust_files(&dir) {
            // Nested crates are walked from their own entry in CRATES.
            if dir.ends_with("benches") && file.strip_prefix(&dir).unwrap().components().count() > 2 {
                let first = file.strip_prefix(&dir).unwrap().iter().next().unwrap().to_string_lossy().into_owned();
                if ["fixtures", "peers", "probe"].contains(&first.as_str()) {
                    continue;
                }
            }
            n += 1;
            if !read(&file).starts_with("//!") {
                missing.push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(n > 50, "only {n} files");
    assert!(missing.is_empty(), "modules without a `//!` line at the top:\n{}", missing.join("\n"));
}
