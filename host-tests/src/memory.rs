//! Bounds-checked guest memory (reads, writes, `return_bytes` through the guest allocator) and what a hostcall body
//! ends with (`Fault`, `HResult`, the status or trap wasmtime expects).

use std::sync::Arc;

use wasmtime::{Caller, Memory};

use crate::abi::Status;
use crate::state::{Phase, VmState};

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
