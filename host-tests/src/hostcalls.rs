//! The 37 `env.proxy_*` imports of the Rust SDK 0.2.5, with Envoy's status codes and semantics.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::{Caller, Linker};

use crate::abi::{
    buffer_type, deserialize_headers, key_eq, map_type, serialize_pairs, stream_type, Headers, LogLevel, MetricType,
    Status,
};
use crate::http_call::{call_io_timeout, request_with_timeout, CallResult};
use crate::memory::{
    read, read_string, return_bytes, slice, status_of, unrestricted, write_u32, write_u64, Fault, HResult,
};
use crate::properties;
use crate::shared::{Event, SharedState};
use crate::state::{CallResponseView, Deferred, PendingCall, Phase, TickTimer, VmState};
use crate::stream::LocalReply;

type C<'a> = Caller<'a, VmState>;

fn lowercase(mut s: String) -> String {
    s.make_ascii_lowercase();
    s
}

/// Where a header map lives for a hostcall.
enum MapRef {
    Stream(usize),
    CallHeaders,
    CallTrailers,
}

/// Finds the map a hostcall may use now: BadArgument when it is not available in this phase
/// (NotFound in the access-log phase), as Envoy's `getMap` does.
fn map_ref(s: &VmState, map: i32) -> HResult<MapRef> {
    match map {
        map_type::REQUEST_HEADERS..=map_type::RESPONSE_TRAILERS => {
            let idx = map as usize;
            let Some(stream) = s.stream() else {
                return Err(Status::BadArgument.into());
            };
            if stream.live[idx] {
                Ok(MapRef::Stream(idx))
            } else if stream.access_log {
                Err(Status::NotFound.into())
            } else {
                Err(Status::BadArgument.into())
            }
        }
        map_type::HTTP_CALL_RESPONSE_HEADERS | map_type::HTTP_CALL_RESPONSE_TRAILERS => match s.call_response {
            Some(CallResponseView::Ok(_)) if map == map_type::HTTP_CALL_RESPONSE_HEADERS => Ok(MapRef::CallHeaders),
            Some(CallResponseView::Ok(_)) => Ok(MapRef::CallTrailers),
            _ => Err(Status::BadArgument.into()),
        },
        _ => Err(Status::BadArgument.into()),
    }
}

/// [`map_ref`] for a write (set, add, replace, remove): in `on_log` the maps are Envoy's read-only copies for the
/// access log, so a write is BadArgument there (checked against Envoy 1.40: `envoy_fidelity::header_writes_in_on_log`).
fn map_write_ref(s: &VmState, map: i32) -> HResult<MapRef> {
    if s.stream().is_some_and(|st| st.access_log)
        && (map_type::REQUEST_HEADERS..=map_type::RESPONSE_TRAILERS).contains(&map)
    {
        return Err(Status::BadArgument.into());
    }
    map_ref(s, map)
}

fn map_get<'a>(s: &'a VmState, r: &MapRef) -> &'a Headers {
    static EMPTY: Headers = Vec::new();
    match (r, &s.call_response) {
        (MapRef::Stream(i), _) => s.stream().map(|st| &st.maps[*i]).unwrap_or(&EMPTY),
        (MapRef::CallHeaders, Some(CallResponseView::Ok(resp))) => &resp.headers,
        (MapRef::CallTrailers, Some(CallResponseView::Ok(resp))) => &resp.trailers,
        _ => &EMPTY,
    }
}

fn map_mut<'a>(s: &'a mut VmState, r: &MapRef) -> Option<&'a mut Headers> {
    match r {
        MapRef::Stream(i) => s.stream_mut().map(|st| &mut st.maps[*i]),
        MapRef::CallHeaders => match &mut s.call_response {
            Some(CallResponseView::Ok(resp)) => Some(&mut resp.headers),
            _ => None,
        },
        MapRef::CallTrailers => match &mut s.call_response {
            Some(CallResponseView::Ok(resp)) => Some(&mut resp.trailers),
            _ => None,
        },
    }
}

/// The bytes of a buffer the guest may read now; NotFound when it does not exist in this phase.
fn buffer(s: &VmState, kind: i32) -> HResult<Vec<u8>> {
    let not_found = || Fault::Status(Status::NotFound);
    match kind {
        buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => {
            let i = kind as usize;
            let st = s.stream().ok_or_else(not_found)?;
            if st.body_live[i] {
                Ok(st.bodies[i].clone())
            } else {
                Err(not_found())
            }
        }
        buffer_type::HTTP_CALL_RESPONSE_BODY => match &s.call_response {
            Some(CallResponseView::Ok(r)) => Ok(r.body.clone()),
            _ => Err(not_found()),
        },
        buffer_type::VM_CONFIGURATION => Ok(s.settings.vm_configuration.clone()),
        buffer_type::PLUGIN_CONFIGURATION if s.phase == Phase::Configure => Ok(s.settings.plugin_configuration.clone()),
        _ => Err(not_found()),
    }
}

/// Registers every `env.proxy_*` function.
pub(crate) fn add_to_linker(l: &mut Linker<VmState>) -> anyhow::Result<()> {
    l.func_wrap("env", "proxy_log", |mut c: C, level: i32, p: i32, n: i32| {
        status_of((|| -> HResult {
            let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
            let msg = read_string(&mut c, p, n)?;
            c.data_mut().log(level, false, msg);
            Ok(())
        })())
    })?;
    l.func_wrap("env", "proxy_get_log_level", |mut c: C, ret: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_get_log_level")?;
            let level = c.data().settings.log_level as u32;
            write_u32(&mut c, ret, level)
        })())
    })?;
    l.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: C, ret: i32| {
        let now = c.data().clock.now_nanos();
        status_of(write_u64(&mut c, ret, now))
    })?;
    l.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: C, period: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_tick_period_milliseconds")?;
            let s = c.data_mut();
            let period = std::time::Duration::from_millis(period as u32 as u64);
            s.tick =
                if period.is_zero() { None } else { Some(TickTimer { period, due: s.clock.monotonic() + period }) };
            Ok(())
        })())
    })?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_get_buffer_bytes")?;
                let (start, max) = (start as u32, max as u32);
                if start.checked_add(max).is_none() {
                    return Err(Status::BadArgument.into());
                }
                let data = buffer(c.data(), kind)?;
                let start = (start as usize).min(data.len());
                let end = start.saturating_add(max as usize).min(data.len());
                return_bytes(&mut c, &data[start..end], ret_ptr, ret_len)
            })())
        },
    )?;
    l.func_wrap("env", "proxy_set_buffer_bytes", |mut c: C, kind: i32, start: i32, size: i32, p: i32, n: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_buffer_bytes")?;
            let bytes = read(&mut c, p, n)?;
            let s = c.data_mut();
            match kind {
                buffer_type::HTTP_REQUEST_BODY | buffer_type::HTTP_RESPONSE_BODY => {
                    let i = kind as usize;
                    let st = s.stream_mut().ok_or(Status::NotFound)?;
                    if !st.body_live[i] {
                        return Err(Status::NotFound.into());
                    }
                    let body = &mut st.bodies[i];
                    let (start, size) = (start as u32 as usize, size as u32 as usize);
                    if start == 0 {
                        let drain = size.min(body.len());
                        body.splice(0..drain, bytes);
                    } else if start >= body.len() {
                        body.extend_from_slice(&bytes);
                    } else {
                        return Err(Status::BadArgument.into());
                    }
                    Ok(())
                }
                buffer_type::HTTP_CALL_RESPONSE_BODY
                | buffer_type::VM_CONFIGURATION
                | buffer_type::PLUGIN_CONFIGURATION => {
                    buffer(s, kind)?;
                    Err(Status::BadArgument.into())
                }
                _ => Err(Status::NotFound.into()),
            }
        })())
    })?;
    l.func_wrap("env", "proxy_get_header_map_pairs", |mut c: C, map: i32, ret_ptr: i32, ret_len: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_get_header_map_pairs")?;
            let bytes = match map_ref(c.data(), map) {
                Ok(r) => {
                    let m = map_get(c.data(), &r);
                    if m.is_empty() {
                        Vec::new()
                    } else {
                        serialize_pairs(m)
                    }
                }
                Err(_) => Vec::new(),
            };
            return_bytes(&mut c, &bytes, ret_ptr, ret_len)
        })())
    })?;
    l.func_wrap("env", "proxy_set_header_map_pairs", |mut c: C, map: i32, p: i32, n: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_header_map_pairs")?;
            let bytes = read(&mut c, p, n)?;
            let pairs = deserialize_headers(&bytes);
            let r = map_write_ref(c.data(), map)?;
            if let Some(m) = map_mut(c.data_mut(), &r) {
                *m = pairs;
            }
            Ok(())
        })())
    })?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C, map: i32, kp: i32, kn: i32, ret_ptr: i32, ret_len: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_get_header_map_value")?;
                let value = {
                    // The key is compared in guest memory, as `read_string(..).to_ascii_lowercase()` would be.
                    let key = slice(&c, kp, kn)?;
                    let r = map_ref(c.data(), map)?;
                    map_get(c.data(), &r)
                        .iter()
                        .find(|(k, _)| key_eq(k, key))
                        .map(|(_, v)| v.as_bytes().to_vec())
                        .ok_or(Status::NotFound)?
                };
                return_bytes(&mut c, &value, ret_ptr, ret_len)
            })())
        },
    )?;
    l.func_wrap("env", "proxy_add_header_map_value", |mut c: C, map: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_add_header_map_value")?;
            let key = lowercase(read_string(&mut c, kp, kn)?);
            let value = read_string(&mut c, vp, vn)?;
            let r = map_write_ref(c.data(), map)?;
            if let Some(m) = map_mut(c.data_mut(), &r) {
                m.push((key, value));
            }
            Ok(())
        })())
    })?;
    l.func_wrap("env", "proxy_replace_header_map_value", |mut c: C, map: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_replace_header_map_value")?;
            let key = lowercase(read_string(&mut c, kp, kn)?);
            let value = read_string(&mut c, vp, vn)?;
            let r = map_write_ref(c.data(), map)?;
            if let Some(m) = map_mut(c.data_mut(), &r) {
                match m.iter().position(|(k, _)| *k == key) {
                    Some(first) => {
                        m[first].1 = value;
                        let mut i = 0;
                        m.retain(|(k, _)| {
                            i += 1;
                            i - 1 == first || *k != key
                        });
                    }
                    None => m.push((key, value)),
                }
            }
            Ok(())
        })())
    })?;
    l.func_wrap("env", "proxy_remove_header_map_value", |mut c: C, map: i32, kp: i32, kn: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_remove_header_map_value")?;
            let key = lowercase(read_string(&mut c, kp, kn)?);
            let r = map_write_ref(c.data(), map)?;
            if let Some(m) = map_mut(c.data_mut(), &r) {
                m.retain(|(k, _)| *k != key);
            }
            Ok(())
        })())
    })?;
    l.func_wrap("env", "proxy_get_property", |mut c: C, pp: i32, pn: i32, ret_ptr: i32, ret_len: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_get_property")?;
            let path = read(&mut c, pp, pn)?;
            let value = properties::get(c.data(), &path)?;
            return_bytes(&mut c, &value, ret_ptr, ret_len)
        })())
    })?;
    l.func_wrap("env", "proxy_set_property", |mut c: C, pp: i32, pn: i32, vp: i32, vn: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_property")?;
            let path = read(&mut c, pp, pn)?;
            let value = read(&mut c, vp, vn)?;
            let st = c.data_mut().stream_mut().ok_or(Status::NotFound)?;
            let key = format!("wasm.{}", String::from_utf8_lossy(&path));
            st.filter_state.insert(key, value);
            Ok(())
        })())
    })?;
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C, kp: i32, kn: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_get_shared_data")?;
                let key = read_string(&mut c, kp, kn)?;
                let s = c.data();
                let (value, cas) = s.shared.get_data(&s.settings.vm_id, &key).ok_or(Status::NotFound)?;
                return_bytes(&mut c, &value, ret_ptr, ret_len)?;
                write_u32(&mut c, ret_cas, cas)
            })())
        },
    )?;
    l.func_wrap("env", "proxy_set_shared_data", |mut c: C, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_shared_data")?;
            let key = read_string(&mut c, kp, kn)?;
            let value = read(&mut c, vp, vn)?;
            let s = c.data();
            match s.shared.set_data(&s.settings.vm_id, &key, &value, cas as u32) {
                Status::Ok => Ok(()),
                other => Err(other.into()),
            }
        })())
    })?;
    l.func_wrap("env", "proxy_register_shared_queue", |mut c: C, np: i32, nn: i32, ret: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_register_shared_queue")?;
            let name = read_string(&mut c, np, nn)?;
            let s = c.data();
            let token = s.shared.register_queue(&s.settings.vm_id, &name, (s.index, s.root_context));
            write_u32(&mut c, ret, token)
        })())
    })?;
    l.func_wrap("env", "proxy_resolve_shared_queue", |mut c: C, vp: i32, vn: i32, np: i32, nn: i32, ret: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_resolve_shared_queue")?;
            let mut vm_id = read_string(&mut c, vp, vn)?;
            let name = read_string(&mut c, np, nn)?;
            let s = c.data();
            if vm_id.is_empty() {
                vm_id = s.settings.vm_id.clone();
            }
            let token = s.shared.resolve_queue(&vm_id, &name).ok_or(Status::NotFound)?;
            write_u32(&mut c, ret, token)
        })())
    })?;
    l.func_wrap("env", "proxy_enqueue_shared_queue", |mut c: C, token: i32, p: i32, n: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_enqueue_shared_queue")?;
            let value = read(&mut c, p, n)?;
            match c.data().shared.enqueue(token as u32, &value) {
                Status::Ok => Ok(()),
                other => Err(other.into()),
            }
        })())
    })?;
    l.func_wrap("env", "proxy_dequeue_shared_queue", |mut c: C, token: i32, ret_ptr: i32, ret_len: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_dequeue_shared_queue")?;
            let value = c.data().shared.dequeue(token as u32).map_err(Fault::Status)?;
            return_bytes(&mut c, &value, ret_ptr, ret_len)
        })())
    })?;
    l.func_wrap("env", "proxy_continue_stream", |mut c: C, kind: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_continue_stream")?;
            let s = c.data_mut();
            let context = s.effective_context;
            match kind {
                stream_type::HTTP_REQUEST | stream_type::HTTP_RESPONSE => {
                    if s.streams.contains_key(&context) {
                        s.deferred.push(Deferred::Continue { context, response: kind == stream_type::HTTP_RESPONSE });
                    }
                    Ok(())
                }
                stream_type::DOWNSTREAM => Ok(()),
                stream_type::UPSTREAM => Err(Status::Unimplemented.into()),
                _ => Err(Status::BadArgument.into()),
            }
        })())
    })?;
    l.func_wrap("env", "proxy_close_stream", |mut c: C, kind: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_close_stream")?;
            let s = c.data_mut();
            let context = s.effective_context;
            match kind {
                stream_type::HTTP_REQUEST | stream_type::HTTP_RESPONSE => {
                    if s.streams.contains_key(&context) {
                        s.deferred.push(Deferred::Close { context });
                    }
                    Ok(())
                }
                stream_type::DOWNSTREAM | stream_type::UPSTREAM => Ok(()),
                _ => Err(Status::BadArgument.into()),
            }
        })())
    })?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C, status: i32, dp: i32, dn: i32, bp: i32, bn: i32, hp: i32, hn: i32, grpc: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_send_local_response")?;
                let details = read_string(&mut c, dp, dn)?;
                let body = read(&mut c, bp, bn)?;
                let headers = deserialize_headers(&read(&mut c, hp, hn)?);
                let s = c.data_mut();
                let context = s.effective_context;
                if s.streams.contains_key(&context) {
                    s.deferred.push(Deferred::LocalReply {
                        context,
                        reply: LocalReply {
                            status: status as u32 as u16,
                            headers,
                            body,
                            details: details.replace(char::is_whitespace, "_"),
                            grpc_status: (0..=16).contains(&grpc).then_some(grpc),
                        },
                    });
                }
                Ok(())
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C, up: i32, un: i32, hp: i32, hn: i32, bp: i32, bn: i32, tp: i32, tn: i32, timeout: i32, ret: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_http_call")?;
                let cluster = read_string(&mut c, up, un)?;
                let mut headers = deserialize_headers(&read(&mut c, hp, hn)?);
                let body = read(&mut c, bp, bn)?;
                let _trailers = deserialize_headers(&read(&mut c, tp, tn)?);
                let s = c.data_mut();
                let addr = *s.settings.clusters.get(&cluster).ok_or(Status::BadArgument)?;
                for required in [":path", ":method", ":authority"] {
                    if !headers.iter().any(|(k, _)| k == required) {
                        return Err(Status::BadArgument.into());
                    }
                }
                if !body.is_empty() {
                    headers.retain(|(k, _)| k != "content-length");
                    headers.push(("content-length".into(), body.len().to_string()));
                }
                s.last_http_token += 4;
                let token = s.last_http_token;
                let timeout = timeout as u32;
                let deadline =
                    (timeout != 0).then(|| s.clock.monotonic() + std::time::Duration::from_millis(timeout as u64));
                s.http_calls.insert(token, PendingCall { deadline });
                spawn_call(addr, headers, body, timeout, s.shared.clone(), s.index, token);
                write_u32(&mut c, ret, token)
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |c: C,
         _a: i32,
         _b: i32,
         _p3: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _ret: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_grpc_call")?;
                // No gRPC clusters exist in this host: Envoy fails to create the client.
                Err(Status::InternalFailure.into())
            })())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |c: C, _a: i32, _b: i32, _p3: i32, _d: i32, _e: i32, _f: i32, _g: i32, _h: i32, _ret: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_grpc_stream")?;
                Err(Status::InternalFailure.into())
            })())
        },
    )?;
    l.func_wrap("env", "proxy_grpc_send", |c: C, _t: i32, _p: i32, _n: i32, _e: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_grpc_send")?;
            Err(Status::NotFound.into())
        })())
    })?;
    l.func_wrap("env", "proxy_grpc_cancel", |c: C, _t: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_grpc_cancel")?;
            Err(Status::NotFound.into())
        })())
    })?;
    l.func_wrap("env", "proxy_grpc_close", |c: C, _t: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_grpc_close")?;
            Err(Status::NotFound.into())
        })())
    })?;
    l.func_wrap("env", "proxy_get_status", |mut c: C, ret_code: i32, ret_ptr: i32, ret_len: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_get_status")?;
            let (code, msg) = c.data().status.clone();
            write_u32(&mut c, ret_code, code)?;
            return_bytes(&mut c, msg.as_bytes(), ret_ptr, ret_len)
        })())
    })?;
    l.func_wrap("env", "proxy_set_effective_context", |mut c: C, id: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_set_effective_context")?;
            let s = c.data_mut();
            if !s.context_exists(id as u32) {
                return Err(Status::BadArgument.into());
            }
            s.effective_context = id as u32;
            Ok(())
        })())
    })?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |c: C, _np: i32, _nn: i32, _ap: i32, _an: i32, _rp: i32, _rl: i32| {
            status_of((|| -> HResult {
                unrestricted(&c, "proxy_call_foreign_function")?;
                // No foreign functions are registered in this host.
                Err(Status::NotFound.into())
            })())
        },
    )?;
    l.func_wrap("env", "proxy_done", |c: C| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_done")?;
            // Only meaningful after an `on_done` that returned false, which this host never defers.
            Err(Status::NotFound.into())
        })())
    })?;
    l.func_wrap("env", "proxy_define_metric", |mut c: C, kind: i32, np: i32, nn: i32, ret: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_define_metric")?;
            let kind = MetricType::from_raw(kind).ok_or(Status::BadArgument)?;
            let name = read_string(&mut c, np, nn)?;
            let s = c.data_mut();
            s.shared.define_metric(kind, &name);
            let slot = &mut s.next_metric[kind as usize];
            *slot += 4;
            let id = *slot;
            s.metric_ids.insert(id, (kind, name));
            write_u32(&mut c, ret, id)
        })())
    })?;
    l.func_wrap("env", "proxy_get_metric", |mut c: C, id: i32, ret: i32| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_get_metric")?;
            let s = c.data();
            let (kind, name) = s.metric_ids.get(&(id as u32)).ok_or(Status::NotFound)?;
            if *kind == MetricType::Histogram {
                return Err(Status::BadArgument.into());
            }
            let v = s.shared.metric(name).ok_or(Status::NotFound)?;
            write_u64(&mut c, ret, v as u64)
        })())
    })?;
    l.func_wrap("env", "proxy_record_metric", |c: C, id: i32, value: i64| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_record_metric")?;
            let s = c.data();
            let (kind, name) = s.metric_ids.get(&(id as u32)).ok_or(Status::NotFound)?;
            match s.shared.record_metric(name, *kind, value) {
                Status::Ok => Ok(()),
                other => Err(other.into()),
            }
        })())
    })?;
    l.func_wrap("env", "proxy_increment_metric", |c: C, id: i32, offset: i64| {
        status_of((|| -> HResult {
            unrestricted(&c, "proxy_increment_metric")?;
            let s = c.data();
            let (kind, name) = s.metric_ids.get(&(id as u32)).ok_or(Status::NotFound)?;
            match s.shared.increment_metric(name, *kind, offset) {
                Status::Ok => Ok(()),
                other => Err(other.into()),
            }
        })())
    })?;
    Ok(())
}

/// Runs a `proxy_http_call` on a thread of its own; its result reaches worker `worker`'s inbox as
/// `Event::HttpCallDone`.
fn spawn_call(
    addr: SocketAddr,
    headers: Headers,
    body: Vec<u8>,
    timeout_ms: u32,
    shared: Arc<SharedState>,
    worker: usize,
    token: u32,
) {
    let shared2 = shared.clone();
    let spawned = std::thread::Builder::new().name(format!("http-call-{token}")).spawn(move || {
        let result = request_with_timeout(addr, &headers, &body, call_io_timeout(timeout_ms));
        shared.post(worker, Event::HttpCallDone { token, result });
    });
    if spawned.is_err() {
        // No thread for the call: it ends as a reset, like a failed stream in Envoy.
        shared2.post(worker, Event::HttpCallDone { token, result: CallResult::Reset });
    }
}

/// The names this module defines, for the "all 37 imports" conformance check.
pub const PROXY_IMPORTS: [&str; 37] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];
