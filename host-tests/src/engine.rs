//! The wasmtime engine (epoch interruption, one per process), the linker with every import, and
//! compiled modules (`InstancePre`) cached per path so a process compiles a module once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Caller, Config, Engine, Extern, ExternType, InstancePre, Linker, Module};

use crate::shared::lock;
use crate::state::VmState;

/// Set (to anything but `0`) to have the engine write a perf map of the compiled guest code, so that
/// `perf record` / `perf report` name the guest's functions (names need a module built with `strip = false`).
pub const PERFMAP_ENV: &str = "WARDEN_WASM_PERFMAP";

/// How often the background thread bumps the engine epoch.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors loading a module.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read wasm module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot compile wasm module: {0}")]
    Compile(String),
    #[error("cannot link wasm module (an import this host does not define?): {0}")]
    Link(String),
}

/// The process's wasmtime engine with epoch interruption on and a thread bumping the epoch
/// every [`EPOCH_TICK`].
#[derive(Clone)]
pub struct HostEngine {
    engine: Engine,
    linker: Arc<Linker<VmState>>,
}

impl HostEngine {
    /// The process-wide engine (created on first use).
    pub fn global() -> &'static HostEngine {
        static ENGINE: OnceLock<HostEngine> = OnceLock::new();
        ENGINE.get_or_init(|| match HostEngine::build() {
            Ok(e) => e,
            // Building an engine with a fixed, valid configuration only fails if the machine
            // cannot run cranelift code at all; nothing useful can continue then.
            Err(e) => panic!("cannot create the wasmtime engine: {e:#}"),
        })
    }

    fn build() -> anyhow::Result<HostEngine> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // For profiling the guest with `perf`: the compiled functions' names go to /tmp/perf-<pid>.map.
        if std::env::var_os(PERFMAP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        crate::hostcalls::add_to_linker(&mut linker)?;
        crate::wasi::add_to_linker(&mut linker)?;
        let weak = engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(HostEngine { engine, linker: Arc::new(linker) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles and links a module.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, LoadError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(CompiledModule { inner: Arc::new(Compiled { engine: self.clone(), module, pre }) })
    }

    /// Links `module` through a counting layer: every function import is a `func_new` trampoline that counts the
    /// call in the calling VM's `HostCalls` (in its `VmState`) and then calls the real import (looked up once per VM
    /// in the real linker). See [`CompiledModule::counting`].
    fn counting(&self, module: &Module) -> Result<CompiledModule, LoadError> {
        let imports: Vec<(String, String, wasmtime::FuncType)> = module
            .imports()
            .filter_map(|i| match i.ty() {
                ExternType::Func(ty) => Some((i.module().to_string(), i.name().to_string(), ty)),
                _ => None,
            })
            .collect();
        let names: Arc<[String]> = imports.iter().map(|(m, n, _)| format!("{m}.{n}")).collect();
        let mut linker: Linker<VmState> = Linker::new(&self.engine);
        for (idx, (m, n, ty)) in imports.into_iter().enumerate() {
            let real = self.linker.clone();
            let names = names.clone();
            let (module_name, name) = (m.clone(), n.clone());
            let trampoline = move |mut caller: Caller<'_, VmState>,
                                   params: &[wasmtime::Val],
                                   results: &mut [wasmtime::Val]|
                  -> wasmtime::Result<()> {
                let f = match caller.data_mut().host_calls.count(idx, &names) {
                    Some(f) => f,
                    None => {
                        let f =
                            real.get(&mut caller, &module_name, &name).ok().and_then(Extern::into_func).ok_or_else(
                                || wasmtime::Error::msg(format!("the host does not define {module_name}.{name}")),
                            )?;
                        caller.data_mut().host_calls.remember(idx, f);
                        f
                    }
                };
                f.call(&mut caller, params, results)
            };
            linker.func_new(&m, &n, ty, trampoline).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        }
        let pre = linker.instantiate_pre(module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(CompiledModule { inner: Arc::new(Compiled { engine: self.clone(), module: module.clone(), pre }) })
    }
}

struct Compiled {
    engine: HostEngine,
    module: Module,
    pre: InstancePre<VmState>,
}

/// A compiled, linked module: cheap to clone and to instantiate as many VMs as needed.
#[derive(Clone)]
pub struct CompiledModule {
    inner: Arc<Compiled>,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule").finish_non_exhaustive()
    }
}

impl CompiledModule {
    /// Compiles bytes with the process engine.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompiledModule, LoadError> {
        HostEngine::global().compile(bytes)
    }

    /// Reads and compiles a file (no caching).
    pub fn from_file(path: impl AsRef<Path>) -> Result<CompiledModule, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        CompiledModule::from_bytes(&bytes)
    }

    /// Compiles a file once per process: later calls with the same path return the same module.
    pub fn load_cached(path: impl AsRef<Path>) -> Result<CompiledModule, LoadError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, CompiledModule>>> = OnceLock::new();
        let path = path.as_ref();
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(m) = lock(cache).get(&key) {
            return Ok(m.clone());
        }
        // Compile outside the lock; a racing compile of the same path is harmless.
        let module = CompiledModule::from_file(&key)?;
        Ok(lock(cache).entry(key).or_insert(module).clone())
    }

    /// The same module linked through a counting layer: each call of an import is counted per VM, by name
    /// ([`crate::Worker::host_calls`]), then handed to the import itself. For benchmarks and profiles: every call
    /// goes through wasmtime's dynamic `Func::call`, so it costs more than a plain call. Modules from
    /// [`CompiledModule::load_cached`] and friends have no such layer and count nothing.
    pub fn counting(&self) -> Result<CompiledModule, LoadError> {
        self.inner.engine.counting(&self.inner.module)
    }

    /// Names of the module's imports as `module.name`.
    pub fn imports(&self) -> Vec<String> {
        self.inner.module.imports().map(|i| format!("{}.{}", i.module(), i.name())).collect()
    }

    /// Names of the module's exports.
    pub fn exports(&self) -> Vec<String> {
        self.inner.module.exports().map(|e| e.name().to_string()).collect()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine.engine
    }

    pub(crate) fn pre(&self) -> &InstancePre<VmState> {
        &self.inner.pre
    }
}
