//! Small host helpers: logging, the host clock in the units the core takes, and proxy-wasm shared data as the
//! gate's [`SharedStore`].

use std::time::{SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};
use warden_core::gate::{SharedStore, StoreError};

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Nanoseconds since the epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Seconds since the epoch, from nanoseconds.
pub fn unix_secs(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

/// Shared data as `(value, cas)`; `None` when missing (or on a status the SDK returns instead of trapping).
pub fn shared_get(key: &str) -> Option<(Vec<u8>, u32)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), Some(cas))) => Some((value, cas)),
        _ => None,
    }
}

/// Proxy-wasm shared data (process-wide per `vm_id`), for the gate's claims.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}
