//! Per-VM host state kept in the wasmtime `Store`, and bounds-checked guest-memory helpers.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Caller, Memory, StoreLimits, TypedFunc};

use crate::abi::{Headers, LogLevel, MetricType, Status};
use crate::clock::Clock;
use crate::http_call::HttpResponse;
use crate::shared::SharedState;
use crate::stream::StreamData;

/// Hashes the small integer keys of a VM's tables (context ids, http-call tokens, metric ids) with one
/// multiplication: the std default (SipHash) costs more than the lookup itself, and the stream table is looked up
/// dozens of times per request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A table keyed by a VM-local integer id.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Process-wide sequence number (orders lines across VMs).
    pub seq: u64,
    pub level: LogLevel,
    /// Index of the worker VM that logged it.
    pub vm: usize,
    /// The context that was active (root context 1, streams 2, 3, …; 0 outside callbacks).
    pub context_id: u32,
    /// True when the host wrote the line (traps, WASI `proc_exit`), false for the filter's own logs
    /// (`proxy_log`, stdout, stderr).
    pub from_host: bool,
    pub message: String,
}

/// Plugin-level settings every VM reads.
#[derive(Debug)]
pub(crate) struct Settings {
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub environment: Vec<(String, String)>,
    pub clusters: BTreeMap<String, SocketAddr>,
    pub log_level: LogLevel,
    pub allow_on_headers_stop_iteration: bool,
    pub fail_open: bool,
    pub request_body_buffer_limit: usize,
    pub response_body_buffer_limit: usize,
}

/// An action a hostcall asked for, run after the current guest call returns.
#[derive(Clone, Debug)]
pub(crate) enum Deferred {
    Continue { context: u32, response: bool },
    Close { context: u32 },
    LocalReply { context: u32, reply: crate::stream::LocalReply },
}

#[derive(Clone, Debug)]
pub(crate) struct TickTimer {
    pub period: Duration,
    /// Due time on the clock's monotonic scale.
    pub due: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct PendingCall {
    /// Monotonic deadline; None when the call has no timeout.
    pub deadline: Option<Duration>,
}

/// The http-call response visible during `proxy_on_http_call_response`.
#[derive(Clone, Debug)]
pub(crate) enum CallResponseView {
    Ok(HttpResponse),
    Failed,
}

/// Which callback the VM is in (for buffers and maps with a lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    /// `_initialize` and the allocator: only logging, clocks, random and environ are allowed.
    Initialize,
    VmStart,
    Configure,
    Other,
}

pub(crate) struct VmState {
    pub index: usize,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    /// The guest allocator, behind an `Arc` so that `return_bytes` can hold it while calling it with the store
    /// (cloning a `TypedFunc` itself copies its registered `FuncType`, several reference counts).
    pub allocate: Option<Arc<TypedFunc<i32, i32>>>,
    pub settings: Arc<Settings>,
    pub shared: Arc<SharedState>,
    pub clock: Clock,
    pub log_seq: Arc<AtomicU64>,
    pub logs: Vec<LogEntry>,
    pub phase: Phase,
    pub current_context: u32,
    pub effective_context: u32,
    pub root_context: u32,
    pub next_context: u32,
    pub streams: IdMap<StreamData>,
    pub tick: Option<TickTimer>,
    pub last_http_token: u32,
    pub http_calls: IdMap<PendingCall>,
    pub call_response: Option<CallResponseView>,
    pub status: (u32, String),
    pub metric_ids: IdMap<(MetricType, String)>,
    pub next_metric: [u32; 3],
    pub deferred: Vec<Deferred>,
    /// Counts of the guest's calls of each import, kept only for a module from [`crate::CompiledModule::counting`].
    pub host_calls: crate::engine::HostCalls,
}

impl VmState {
    pub(crate) fn new(
        index: usize,
        limits: StoreLimits,
        settings: Arc<Settings>,
        shared: Arc<SharedState>,
        clock: Clock,
        log_seq: Arc<AtomicU64>,
    ) -> VmState {
        VmState {
            index,
            limits,
            memory: None,
            allocate: None,
            settings,
            shared,
            clock,
            log_seq,
            logs: Vec::new(),
            phase: Phase::Idle,
            current_context: 0,
            effective_context: 0,
            root_context: 1,
            next_context: 2,
            streams: IdMap::default(),
            tick: None,
            last_http_token: 0,
            http_calls: IdMap::default(),
            call_response: None,
            status: (0, String::new()),
            metric_ids: IdMap::default(),
            next_metric: [0, 1, 2],
            deferred: Vec::new(),
            host_calls: Default::default(),
        }
    }

    pub(crate) fn log(&mut self, level: LogLevel, from_host: bool, message: String) {
        if !from_host && level < self.settings.log_level {
            return;
        }
        let seq = self.log_seq.fetch_add(1, Ordering::Relaxed);
        self.logs.push(LogEntry { seq, level, vm: self.index, context_id: self.effective_context, from_host, message });
    }

    /// The stream the effective context names, if it is a stream.
    pub(crate) fn stream(&self) -> Option<&StreamData> {
        self.streams.get(&self.effective_context)
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective_context)
    }

    pub(crate) fn context_exists(&self, id: u32) -> bool {
        id == self.root_context || self.streams.contains_key(&id)
    }
}

/// What a hostcall body ends with: a status for the guest, or a trap.
pub(crate) enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(s: Status) -> Fault {
        Fault::Status(s)
    }
}

pub(crate) type HResult<T = ()> = Result<T, Fault>;

/// Converts a hostcall body's result into the i32 status (or trap) wasmtime expects.
pub(crate) fn status_of(r: HResult) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok as i32),
        Err(Fault::Status(s)) => Ok(s as i32),
        Err(Fault::Trap(e)) => Err(e),
    }
}

/// Traps a call that V8 would refuse during `_initialize` (`restricted_callback`).
pub(crate) fn unrestricted(c: &Caller<'_, VmState>, name: &str) -> HResult {
    if c.data().phase == Phase::Initialize {
        return Err(Fault::Trap(wasmtime::format_err!("restricted_callback: {name} called during _initialize")));
    }
    Ok(())
}

fn memory(c: &Caller<'_, VmState>) -> HResult<Memory> {
    c.data().memory.ok_or(Fault::Status(Status::InvalidMemoryAccess))
}

fn range(ptr: i32, len: usize, size: usize) -> HResult<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(Fault::Status(Status::InvalidMemoryAccess))?;
    if end > size {
        return Err(Fault::Status(Status::InvalidMemoryAccess));
    }
    Ok(start..end)
}

/// Copies `len` bytes from guest memory; InvalidMemoryAccess when out of bounds.
pub(crate) fn read(c: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HResult<Vec<u8>> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let r = range(ptr, len as u32 as usize, data.len())?;
    Ok(data[r].to_vec())
}

pub(crate) fn read_string(c: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HResult<String> {
    Ok(crate::abi::lossy_string(read(c, ptr, len)?))
}

/// Borrows `len` bytes of guest memory (no copy); InvalidMemoryAccess when out of bounds.
pub(crate) fn slice<'a>(c: &'a Caller<'_, VmState>, ptr: i32, len: i32) -> HResult<&'a [u8]> {
    let mem = memory(c)?;
    let data = mem.data(c);
    let r = range(ptr, len as u32 as usize, data.len())?;
    Ok(&data[r])
}

pub(crate) fn write(c: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> HResult {
    let mem = memory(c)?;
    let data = mem.data_mut(&mut *c);
    let r = range(ptr, bytes.len(), data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(c: &mut Caller<'_, VmState>, ptr: i32, v: u32) -> HResult {
    write(c, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(c: &mut Caller<'_, VmState>, ptr: i32, v: u64) -> HResult {
    write(c, ptr, &v.to_le_bytes())
}

/// Returns data to the guest as Envoy's `copyToPointerSize` does: zero length writes (0, 0)
/// without allocating; otherwise the guest allocator is called re-entrantly for exactly `len`
/// bytes, the memory view is read again, the data copied and (ptr, len) written as u32 LE.
pub(crate) fn return_bytes(c: &mut Caller<'_, VmState>, bytes: &[u8], ptr_ptr: i32, len_ptr: i32) -> HResult {
    if bytes.is_empty() {
        write_u32(c, ptr_ptr, 0)?;
        return write_u32(c, len_ptr, 0);
    }
    let alloc = Arc::clone(c.data().allocate.as_ref().ok_or(Fault::Status(Status::InvalidMemoryAccess))?);
    let previous = c.data().phase;
    let ptr = alloc.call(&mut *c, bytes.len() as i32).map_err(Fault::Trap)?;
    c.data_mut().phase = previous;
    if ptr == 0 {
        return Err(Fault::Status(Status::InvalidMemoryAccess));
    }
    write(c, ptr, bytes)?;
    write_u32(c, ptr_ptr, ptr as u32)?;
    write_u32(c, len_ptr, bytes.len() as u32)
}

/// Lowercased header lookup helpers shared by hostcalls and streams.
pub(crate) fn header_value<'a>(map: &'a Headers, key: &str) -> Option<&'a str> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}
