//! ABI v0.2.1 constants (statuses, enums) and the header-map ("pairs") serialization.

/// Status codes a hostcall returns (spec v0.2.1; Envoy's `WasmResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    /// Only reported through `proxy_get_status`.
    BrokenConnection = 11,
    Unimplemented = 12,
}

/// What a `proxy_on_*_headers/body/trailers` callback returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    /// Envoy treats 0 as Continue and anything else as the strongest stop.
    pub fn from_raw(v: i32) -> Action {
        if v == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// Log levels (`proxy_log`, `proxy_get_log_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub fn from_raw(v: i32) -> Option<LogLevel> {
        Some(match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

pub mod buffer_type {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const DOWNSTREAM_DATA: i32 = 2;
    pub const UPSTREAM_DATA: i32 = 3;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const GRPC_RECEIVE_BUFFER: i32 = 5;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
    pub const CALL_DATA: i32 = 8;
}

pub mod map_type {
    pub const REQUEST_HEADERS: i32 = 0;
    pub const REQUEST_TRAILERS: i32 = 1;
    pub const RESPONSE_HEADERS: i32 = 2;
    pub const RESPONSE_TRAILERS: i32 = 3;
    pub const GRPC_INITIAL_METADATA: i32 = 4;
    pub const GRPC_TRAILING_METADATA: i32 = 5;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

pub mod stream_type {
    pub const HTTP_REQUEST: i32 = 0;
    pub const HTTP_RESPONSE: i32 = 1;
    pub const DOWNSTREAM: i32 = 2;
    pub const UPSTREAM: i32 = 3;
}

/// Metric types; the id of a metric carries its type in the low 2 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricType {
    pub fn from_raw(v: i32) -> Option<MetricType> {
        match v {
            0 => Some(MetricType::Counter),
            1 => Some(MetricType::Gauge),
            2 => Some(MetricType::Histogram),
            _ => None,
        }
    }
}

/// A header map: ordered (key, value) pairs, keys as Envoy stores them.
pub type Headers = Vec<(String, String)>;

/// Serializes pairs: u32 LE count, (key_len, value_len) per pair, then each key and value NUL-terminated.
pub fn serialize_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut size = 4 + pairs.len() * 8;
    for (k, v) in pairs {
        size += k.as_ref().len() + v.as_ref().len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses pairs from the guest as Envoy's `PairsUtil::toPairs` does: anything malformed (missing NUL,
/// leftover bytes, more than 1 MiB or 1024 pairs) gives an empty map, never an error.
pub fn deserialize_pairs(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    const MAX_SIZE: usize = 1 << 20;
    const MAX_PAIRS: usize = 1024;
    if bytes.len() < 4 || bytes.len() > MAX_SIZE {
        return Vec::new();
    }
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if n > MAX_PAIRS {
        return Vec::new();
    }
    let mut sizes = Vec::with_capacity(n);
    let mut pos = 4usize;
    for _ in 0..n {
        if pos + 8 > bytes.len() {
            return Vec::new();
        }
        let k = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let v = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        sizes.push((k, v));
        pos += 8;
    }
    let mut out = Vec::with_capacity(n);
    for (k, v) in sizes {
        let Some(key) = take_nul_terminated(bytes, &mut pos, k) else {
            return Vec::new();
        };
        let Some(value) = take_nul_terminated(bytes, &mut pos, v) else {
            return Vec::new();
        };
        out.push((key, value));
    }
    if pos != bytes.len() {
        return Vec::new();
    }
    out
}

fn take_nul_terminated(bytes: &[u8], pos: &mut usize, len: usize) -> Option<Vec<u8>> {
    let end = pos.checked_add(len)?;
    if end >= bytes.len() || bytes[end] != 0 {
        return None;
    }
    let v = bytes[*pos..end].to_vec();
    *pos = end + 1;
    Some(v)
}

/// Parses a guest map into lowercased-key string pairs (lossy UTF-8), as Envoy writes them.
pub fn deserialize_headers(bytes: &[u8]) -> Headers {
    deserialize_pairs(bytes)
        .into_iter()
        .map(|(k, v)| {
            let mut k = lossy_string(k);
            k.make_ascii_lowercase();
            (k, lossy_string(v))
        })
        .collect()
}

/// `String::from_utf8_lossy(&bytes).into_owned()` without the copy (and with the fast validator) when the bytes
/// are valid UTF-8, as they nearly always are.
pub(crate) fn lossy_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Whether `stored` equals `raw` as the hostcalls see a key: lossy UTF-8, then ASCII-lowercased (what
/// `read_string(..).to_ascii_lowercase()` gives), without building that string when `raw` is valid UTF-8.
pub(crate) fn key_eq(stored: &str, raw: &[u8]) -> bool {
    if std::str::from_utf8(raw).is_ok() {
        stored.len() == raw.len() && stored.bytes().zip(raw).all(|(a, b)| a == b.to_ascii_lowercase())
    } else {
        *stored == String::from_utf8_lossy(raw).to_ascii_lowercase()
    }
}

/// The value of the first header named `key` (ASCII case-insensitive).
pub(crate) fn header_value<'a>(map: &'a Headers, key: &str) -> Option<&'a str> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let pairs = vec![(":method".to_string(), "GET".to_string())];
        let bytes = serialize_pairs(&pairs);
        assert_eq!(&bytes[..12], &[1, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[12..], b":method\0GET\0");
        assert_eq!(deserialize_headers(&bytes), pairs);
    }

    #[test]
    fn malformed_maps_are_empty() {
        let mut bytes = serialize_pairs(&[("a", "b")]);
        bytes.push(7);
        assert!(deserialize_pairs(&bytes).is_empty());
        assert!(deserialize_pairs(&[0]).is_empty());
        let mut no_nul = serialize_pairs(&[("a", "b")]);
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert!(deserialize_pairs(&no_nul).is_empty());
    }
}
