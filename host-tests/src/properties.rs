//! `proxy_get_property`: Envoy's attributes with Envoy's encodings (strings raw, numbers 8-byte
//! LE, bools 1 byte, timestamps i64 ns, maps as pairs), and filter state (`wasm.<name>`).

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use crate::abi::{header_value, serialize_pairs, Headers, Status};
use crate::memory::{Fault, HResult};
use crate::state::{StreamData, VmState};

fn s(v: &str) -> HResult<Vec<u8>> {
    Ok(v.as_bytes().to_vec())
}

fn int(v: i64) -> HResult<Vec<u8>> {
    Ok(v.to_le_bytes().to_vec())
}

fn not_found<T>() -> HResult<T> {
    Err(Fault::Status(Status::NotFound))
}

/// Request headers as the `request.headers` attribute: repeated values comma-joined.
fn joined(map: &Headers) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in map {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some((_, ov)) => {
                ov.push(',');
                ov.push_str(v);
            }
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

fn header_attr(map: &Headers, rest: &[Cow<str>]) -> HResult<Vec<u8>> {
    let j = joined(map);
    match rest.first() {
        Some(name) => {
            let name = name.to_ascii_lowercase();
            j.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_bytes().to_vec())
                .ok_or(Fault::Status(Status::NotFound))
        }
        None => Ok(serialize_pairs(&j)),
    }
}

fn json_value(v: &serde_json::Value) -> HResult<Vec<u8>> {
    match v {
        serde_json::Value::String(x) => s(x),
        serde_json::Value::Bool(b) => Ok(vec![*b as u8]),
        serde_json::Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0).to_le_bytes().to_vec()),
        serde_json::Value::Null => not_found(),
        other => Ok(other.to_string().into_bytes()),
    }
}

fn request(st: &StreamData, rest: &[Cow<str>]) -> HResult<Vec<u8>> {
    // Envoy reads `request.*` from the request header map, which it hands out only while the headers are the
    // filter's (in `on_request_headers`, while paused there) and to the access log: once they went on, every
    // `request.*` attribute is NotFound (checked against Envoy 1.40:
    // `envoy_fidelity::headers_and_request_properties_after_the_headers_went_on`).
    // (`time` and `protocol` come from the stream, not the headers, and stay.)
    let from_stream = matches!(rest.first().map(|x| x.as_ref()), Some("time" | "protocol"));
    if !from_stream && !st.live[0] && !st.access_log {
        return not_found();
    }
    let h = &st.maps[0];
    let get = |k: &str| header_value(h, k).unwrap_or("").as_bytes().to_vec();
    let path = header_value(h, ":path").unwrap_or("");
    match rest.first().map(|x| x.as_ref()) {
        Some("path") => Ok(get(":path")),
        Some("url_path") => s(path.split('?').next().unwrap_or("")),
        Some("query") => s(path.split_once('?').map(|(_, q)| q).unwrap_or("")),
        Some("host") => Ok(get(":authority")),
        Some("scheme") => Ok(get(":scheme")),
        Some("method") => Ok(get(":method")),
        Some("referer") => Ok(get("referer")),
        Some("useragent") => Ok(get("user-agent")),
        Some("id") => Ok(get("x-request-id")),
        Some("protocol") => s(&st.info.protocol),
        Some("headers") => header_attr(h, &rest[1..]),
        Some("time") => int(st.info.start_time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)),
        Some("size") => match header_value(h, "content-length").and_then(|v| v.parse().ok()) {
            Some(n) => int(n),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn response(st: &StreamData, rest: &[Cow<str>]) -> HResult<Vec<u8>> {
    // In `on_response_headers` (and while paused there) the response headers are the live map, not yet forwarded:
    // Envoy answers `response.code` there (checked against Envoy 1.40:
    // `envoy_fidelity::response_code_in_the_response_headers`).
    let headers = match st.flows[1].forwarded_headers.as_ref() {
        Some(h) => h,
        None if st.live[2] => &st.maps[2],
        None => return not_found(),
    };
    match rest.first().map(|x| x.as_ref()) {
        Some("code") => match header_value(headers, ":status").and_then(|v| v.parse().ok()) {
            Some(code) => int(code),
            None => not_found(),
        },
        Some("code_details") => s(st.code_details()),
        Some("headers") => header_attr(headers, &rest[1..]),
        Some("trailers") => header_attr(&st.flows[1].forwarded_trailers, &rest[1..]),
        Some("size") => int(st.flows[1].forwarded_body.len() as i64),
        _ => not_found(),
    }
}

fn connection(st: &StreamData, rest: &[Cow<str>]) -> HResult<Vec<u8>> {
    let tls = st.info.tls.as_ref();
    let opt = |v: Option<&String>| match v {
        Some(v) => s(v),
        None => not_found(),
    };
    match rest.first().map(|x| x.as_ref()) {
        Some("id") => int(st.info.connection_id as i64),
        Some("mtls") => Ok(vec![tls.is_some_and(|t| t.peer_certificate_presented()) as u8]),
        Some("requested_server_name") => s(tls.and_then(|t| t.requested_server_name.as_deref()).unwrap_or("")),
        Some("tls_version") => opt(tls.map(|t| &t.tls_version)),
        Some("uri_san_peer_certificate") => opt(tls.and_then(|t| t.uri_san_peer_certificate.as_ref())),
        Some("dns_san_peer_certificate") => opt(tls.and_then(|t| t.dns_san_peer_certificate.as_ref())),
        Some("subject_peer_certificate") => opt(tls.and_then(|t| t.subject_peer_certificate.as_ref())),
        Some("sha256_peer_certificate_digest") => opt(tls.and_then(|t| t.sha256_peer_certificate_digest.as_ref())),
        _ => not_found(),
    }
}

/// Resolves a NUL-joined property path for the effective context.
pub(crate) fn get(vm: &VmState, path: &[u8]) -> HResult<Vec<u8>> {
    let segs: Vec<Cow<str>> = path.split(|b| *b == 0).map(String::from_utf8_lossy).collect();
    let first = segs.first().map(|x| x.as_ref()).unwrap_or("");
    let rest = &segs[1.min(segs.len())..];
    let settings = &vm.settings;
    let stream = vm.stream();
    match first {
        "plugin_name" => return s(&settings.plugin_name),
        "plugin_root_id" => return s(&settings.root_id),
        "plugin_vm_id" => return s(&settings.vm_id),
        _ => {}
    }
    let Some(st) = stream else {
        return not_found();
    };
    match first {
        "request" => request(st, rest),
        "response" => response(st, rest),
        "source" | "destination" => {
            let addr = if first == "source" { st.info.source_address } else { st.info.destination_address };
            match rest.first().map(|x| x.as_ref()) {
                Some("address") => s(&addr.to_string()),
                Some("port") => int(addr.port() as i64),
                _ => not_found(),
            }
        }
        "connection" => connection(st, rest),
        "connection_id" => int(st.info.connection_id as i64),
        "filter_state" => match rest.first().and_then(|k| st.filter_state.get(k.as_ref())) {
            Some(v) => Ok(v.clone()),
            None => not_found(),
        },
        "metadata" => {
            let mut v = &st.info.metadata;
            for seg in rest {
                v = match v {
                    serde_json::Value::Object(m) => match m.get(seg.as_ref()) {
                        Some(x) => x,
                        None => return not_found(),
                    },
                    serde_json::Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                        Some(x) => x,
                        None => return not_found(),
                    },
                    _ => return not_found(),
                };
            }
            json_value(v)
        }
        other => {
            let key = format!("wasm.{other}");
            match st.filter_state.get(&key) {
                Some(v) if rest.is_empty() => Ok(v.clone()),
                _ => not_found(),
            }
        }
    }
}
