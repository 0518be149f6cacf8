//! A log line captured from a VM: the filter's own (`proxy_log`, stdout, stderr) or the host's (traps, WASI
//! `proc_exit`).

use crate::abi::LogLevel;

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
