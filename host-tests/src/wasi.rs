//! The WASI (`wasi_snapshot_preview1` and `wasi_unstable`) subset Envoy provides, written out by
//! hand: stdout/stderr as logs, clocks from the host clock, random, empty environ; the rest errno.

use std::hash::{BuildHasher, Hasher};

use wasmtime::{Caller, Linker};

use crate::abi::LogLevel;
use crate::memory::{read, write, write_u32, write_u64, Fault};
use crate::state::VmState;

type C<'a> = Caller<'a, VmState>;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const EFAULT: i32 = 21;

fn errno(r: Result<i32, Fault>) -> wasmtime::Result<i32> {
    match r {
        Ok(v) => Ok(v),
        Err(Fault::Status(_)) => Ok(EFAULT),
        Err(Fault::Trap(e)) => Err(e),
    }
}

fn fd_write(c: &mut C, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> Result<i32, Fault> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(EBADF),
    };
    let mut out = Vec::new();
    for i in 0..iovs_len as u32 {
        let entry = read(c, iovs.wrapping_add((i * 8) as i32), 8)?;
        let ptr = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let len = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        out.extend(read(c, ptr as i32, len as i32)?);
    }
    let n = out.len() as u32;
    let mut msg = crate::abi::lossy_string(out);
    if msg.ends_with('\n') {
        msg.pop();
    }
    c.data_mut().log(level, false, msg);
    write_u32(c, nwritten, n)?;
    Ok(SUCCESS)
}

fn environ_bytes(s: &VmState) -> Vec<Vec<u8>> {
    s.settings.environment.iter().map(|(k, v)| format!("{k}={v}\0").into_bytes()).collect()
}

fn random_u64(state: &mut u64) -> u64 {
    // splitmix64, seeded from the process's random hasher keys.
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn add_module(l: &mut Linker<VmState>, m: &str) -> anyhow::Result<()> {
    l.func_wrap(m, "fd_write", |mut c: C, fd: i32, iovs: i32, n: i32, ret: i32| {
        errno(fd_write(&mut c, fd, iovs, n, ret))
    })?;
    l.func_wrap(m, "fd_read", |_c: C, _fd: i32, _i: i32, _n: i32, _r: i32| ENOSYS)?;
    l.func_wrap(m, "fd_seek", |_c: C, _fd: i32, _o: i64, _w: i32, _r: i32| ENOTSUP)?;
    l.func_wrap(m, "fd_close", |_c: C, _fd: i32| ENOTSUP)?;
    l.func_wrap(m, "fd_fdstat_get", |mut c: C, fd: i32, ret: i32| {
        errno((|| -> Result<i32, Fault> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            // fs_filetype (u8), fs_flags (u16), fs_rights_base (u64 = 64), fs_rights_inheriting (u64)
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&64u64.to_le_bytes());
            write(&mut c, ret, &stat)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "fd_fdstat_set_flags", |_c: C, _fd: i32, _f: i32| ENOTSUP)?;
    l.func_wrap(m, "fd_prestat_get", |_c: C, _fd: i32, _r: i32| EBADF)?;
    l.func_wrap(m, "fd_prestat_dir_name", |_c: C, _fd: i32, _p: i32, _n: i32| ENOTSUP)?;
    l.func_wrap(m, "fd_filestat_get", |_c: C, _fd: i32, _r: i32| EBADF)?;
    l.func_wrap(
        m,
        "path_open",
        |_c: C, _fd: i32, _df: i32, _p: i32, _n: i32, _of: i32, _rb: i64, _ri: i64, _ff: i32, _r: i32| ENOENT,
    )?;
    l.func_wrap(m, "environ_sizes_get", |mut c: C, count: i32, size: i32| {
        errno((|| -> Result<i32, Fault> {
            let env = environ_bytes(c.data());
            let total: usize = env.iter().map(Vec::len).sum();
            write_u32(&mut c, count, env.len() as u32)?;
            write_u32(&mut c, size, total as u32)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "environ_get", |mut c: C, environ: i32, buf: i32| {
        errno((|| -> Result<i32, Fault> {
            let env = environ_bytes(c.data());
            let mut offset = 0u32;
            for (i, e) in env.iter().enumerate() {
                let p = (buf as u32).wrapping_add(offset);
                write(&mut c, p as i32, e)?;
                write_u32(&mut c, environ.wrapping_add((i * 4) as i32), p)?;
                offset += e.len() as u32;
            }
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "args_sizes_get", |mut c: C, argc: i32, size: i32| {
        errno((|| -> Result<i32, Fault> {
            write_u32(&mut c, argc, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "args_get", |_c: C, _a: i32, _b: i32| SUCCESS)?;
    l.func_wrap(m, "clock_time_get", |mut c: C, id: i32, _precision: i64, ret: i32| {
        errno((|| -> Result<i32, Fault> {
            let t = match id {
                0 => c.data().clock.now_nanos(),
                1 => c.data().clock.monotonic().as_nanos() as u64,
                _ => return Ok(ENOTSUP),
            };
            write_u64(&mut c, ret, t)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "clock_res_get", |mut c: C, id: i32, ret: i32| {
        errno((|| -> Result<i32, Fault> {
            if id != 0 && id != 1 {
                return Ok(ENOTSUP);
            }
            write_u64(&mut c, ret, 1)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "random_get", |mut c: C, buf: i32, len: i32| {
        errno((|| -> Result<i32, Fault> {
            let len = len as u32 as usize;
            if len > 64 * 1024 {
                return Ok(EINVAL);
            }
            let mut seed = {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(len);
                h.finish()
            };
            let mut bytes = Vec::with_capacity(len + 8);
            while bytes.len() < len {
                bytes.extend_from_slice(&random_u64(&mut seed).to_le_bytes());
            }
            bytes.truncate(len);
            write(&mut c, buf, &bytes)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "proc_exit", |mut c: C, code: i32| {
        c.data_mut().log(LogLevel::Error, true, format!("wasi_unstable proc_exit (code {code})"));
    })?;
    l.func_wrap(m, "poll_oneoff", |mut c: C, _in: i32, _out: i32, _n: i32, nevents: i32| {
        errno((|| -> Result<i32, Fault> {
            write_u32(&mut c, nevents, 0)?;
            Ok(SUCCESS)
        })())
    })?;
    l.func_wrap(m, "sched_yield", |_c: C| SUCCESS)?;
    Ok(())
}

/// Registers the subset under both module names, as Envoy does.
pub(crate) fn add_to_linker(l: &mut Linker<VmState>) -> anyhow::Result<()> {
    add_module(l, "wasi_snapshot_preview1")?;
    add_module(l, "wasi_unstable")
}
