//! Every committed input through its target: the seed corpus (`fuzz/corpus/<target>/`) and the inputs fuzzing
//! found (`fuzz/regressions/<target>/`, each a crash once, fixed since). Plain `cargo test`, no fuzzer needed.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Targets listed in `fuzz/pending.txt` (found inputs whose fix is on another branch).
fn pending() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pending.txt")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn replay(kind: &str, which: impl Fn(&str) -> bool) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut n = 0;
    for (name, target) in warden_fuzz::TARGETS.iter().filter(|(name, _)| which(name)) {
        for file in inputs(&root.join(name)) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} fails (rerun: WARDEN_FUZZ_TARGET={name} scripts/fuzz.sh --run {})",
                file.display(),
                file.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_passes_every_target() {
    let n = replay("corpus", |_| true);
    assert!(n >= warden_fuzz::TARGETS.len() * 3, "only {n} seed inputs: run scripts/fuzz.sh --seed");
    for (name, _) in warden_fuzz::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
        assert!(!inputs(&dir).is_empty(), "no seed corpus for {name} in {}", dir.display());
    }
}

#[test]
fn every_found_input_stays_fixed() {
    let pending = pending();
    replay("regressions", |name| !pending.iter().any(|p| p == name));
}
