//! The recorded-request format: one HTTP request as a JSON object, as `warden-gateway replay` and `warden eval` read
//! it (one object per line in a `.jsonl` file).
//!
//! ```json
//! {"id": "r1", "method": "GET", "path": "/v1/charges/ch_1?expand=x", "host": "payments.acme.example",
//!  "headers": [["authorization", "Bearer eyJ…"], ["accept", "application/json"]],
//!  "body": "text body", "source_address": "10.0.0.7:51000",
//!  "peer_uri_san": "spiffe://acme.example/agents/finance/reconciler", "time": "2026-11-28T10:00:00Z"}
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `method` | string, required | HTTP method (an RFC 9110 token) |
//! | `path` | string, required | the request target as the client sent it (path and query; normalized by the filter) |
//! | `host` | string | `:authority`; when absent, the `host` header is used; one of the two is required |
//! | `headers` | `[[name, value], …]` or `{name: value \| [values]}` | regular headers (no pseudo-headers); order and repeats are kept with the list form |
//! | `body` | string | the body as UTF-8 text |
//! | `body_base64` | string | the body as standard base64 (for bytes that are not UTF-8); not with `body` |
//! | `source_address` | string | the downstream peer, `ip:port` or `ip` (Envoy `source.address`) |
//! | `peer_uri_san` | string | the URI SAN of the client's mTLS certificate (`connection.uri_san_peer_certificate`) |
//! | `time` | string | when the request happened, RFC 3339 UTC (`…Z`, fractions dropped); tools use "now" without it |
//! | `id` | string | a label of the caller's choosing, echoed in results |
//!
//! Unknown fields are errors. [`RecordedRequest::parse_line`] parses and validates a line completely, so that a tool
//! can report a bad line with its reason before running anything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::time::parse_rfc3339;

/// One recorded request (see the module documentation for the JSON shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedRequest {
    /// A caller's label, echoed in results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub method: String,
    /// Path and query as sent (not normalized).
    pub path: String,
    /// `:authority`; falls back to the `host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Regular headers in order, repeats kept.
    #[serde(default, deserialize_with = "deserialize_headers", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uri_san: Option<String>,
    /// RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Why a recorded request is unusable. The text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not the shape above (serde's message, with line and column).
    #[error("{0}")]
    Json(String),
    #[error("field `method`: `{0}` is not an HTTP method (a token such as GET or POST)")]
    BadMethod(String),
    #[error("field `path`: {0}")]
    BadPath(&'static str),
    #[error("field `host`: `{0}` is empty or contains a space or a control character")]
    BadHost(String),
    #[error("no host: set `host` or a `host` header")]
    NoHost,
    #[error("field `headers`: `{0}` is not an HTTP header name")]
    BadHeaderName(String),
    #[error("field `headers`: `{0}` is a pseudo-header; use the `method`, `path` and `host` fields")]
    PseudoHeader(String),
    #[error("field `headers`: the value of `{0}` contains a control character")]
    BadHeaderValue(String),
    #[error("`body` and `body_base64` are both set; use one")]
    TwoBodies,
    #[error("field `body_base64`: not standard base64: {0}")]
    BadBase64(String),
    #[error("field `source_address`: `{0}` is not `ip:port` or `ip`")]
    BadSourceAddress(String),
    #[error("field `time`: `{0}` is not an RFC 3339 UTC time such as 2026-11-28T10:00:00Z")]
    BadTime(String),
}

impl RecordedRequest {
    /// Parses one JSON line and validates every field.
    pub fn parse_line(line: &str) -> Result<RecordedRequest, RequestError> {
        let r: RecordedRequest = serde_json::from_str(line).map_err(|e| RequestError::Json(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    /// Checks every field; the accessors below then cannot fail on a validated request.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.method.is_empty() || !self.method.bytes().all(is_tchar) {
            return Err(RequestError::BadMethod(self.method.clone()));
        }
        if self.path.is_empty() {
            return Err(RequestError::BadPath("must not be empty"));
        }
        if self.path.bytes().any(|c| c <= b' ' || c == 0x7f) {
            return Err(RequestError::BadPath("contains a space or a control character"));
        }
        for (name, value) in &self.headers {
            if name.starts_with(':') {
                return Err(RequestError::PseudoHeader(name.clone()));
            }
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(RequestError::BadHeaderName(name.clone()));
            }
            if value.bytes().any(|c| (c < b' ' && c != b'\t') || c == 0x7f) {
                return Err(RequestError::BadHeaderValue(name.clone()));
            }
        }
        let host = self.authority()?;
        if host.is_empty() || host.bytes().any(|c| c <= b' ' || c == 0x7f) {
            return Err(RequestError::BadHost(host.to_string()));
        }
        self.body_bytes()?;
        self.source_socket_address()?;
        self.time_seconds()?;
        Ok(())
    }

    /// The `:authority`: the `host` field, else the first `host` header.
    pub fn authority(&self) -> Result<&str, RequestError> {
        if let Some(h) = &self.host {
            return Ok(h);
        }
        self.header("host").ok_or(RequestError::NoHost)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body bytes (empty when neither `body` nor `body_base64` is set).
    pub fn body_bytes(&self) -> Result<Vec<u8>, RequestError> {
        match (&self.body, &self.body_base64) {
            (Some(_), Some(_)) => Err(RequestError::TwoBodies),
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(b64)) => STANDARD.decode(b64.trim()).map_err(|e| RequestError::BadBase64(e.to_string())),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// The downstream peer; an address without a port gets port 0.
    pub fn source_socket_address(&self) -> Result<Option<SocketAddr>, RequestError> {
        let Some(s) = &self.source_address else { return Ok(None) };
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Some(a));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Some(SocketAddr::new(ip, 0))),
            Err(_) => Err(RequestError::BadSourceAddress(s.clone())),
        }
    }

    /// The request time in seconds since the epoch, if recorded.
    pub fn time_seconds(&self) -> Result<Option<i64>, RequestError> {
        match &self.time {
            None => Ok(None),
            Some(t) => parse_rfc3339(t).map(Some).ok_or_else(|| RequestError::BadTime(t.clone())),
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Headers as a list of `[name, value]` pairs, or as an object whose values are strings or arrays of strings.
pub(crate) fn deserialize_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct HeadersVisitor;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    impl<'de> Visitor<'de> for HeadersVisitor {
        type Value = Vec<(String, String)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of [name, value] pairs or an object of name: value (or name: [values])")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = seq.next_element::<(String, String)>()? {
                out.push(pair);
            }
            Ok(out)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                match map.next_value::<OneOrMany>().map_err(|_| {
                    de::Error::custom(format!("header `{name}`: expected a string or an array of strings"))
                })? {
                    OneOrMany::One(v) => out.push((name, v)),
                    OneOrMany::Many(vs) => out.extend(vs.into_iter().map(|v| (name.clone(), v))),
                }
            }
            Ok(out)
        }
    }

    d.deserialize_any(HeadersVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        match RecordedRequest::parse_line(line) {
            Ok(r) => panic!("accepted {line}: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_request_parses() {
        let r = RecordedRequest::parse_line(
            r#"{"id":"r1","method":"POST","path":"/a?b=1","host":"x.example",
                "headers":[["Authorization","Bearer t"],["x-a","1"],["x-a","2"]],
                "body":"{}","source_address":"10.0.0.7:51000","peer_uri_san":"spiffe://d/a",
                "time":"2026-11-28T10:00:00.250Z"}"#,
        )
        .unwrap();
        assert_eq!(r.authority().unwrap(), "x.example");
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.body_bytes().unwrap(), b"{}");
        assert_eq!(r.source_socket_address().unwrap(), Some("10.0.0.7:51000".parse().unwrap()));
        assert_eq!(r.time_seconds().unwrap(), parse_rfc3339("2026-11-28T10:00:00Z"));
    }

    #[test]
    fn header_object_form_and_host_header() {
        let r = RecordedRequest::parse_line(
            r#"{"method":"GET","path":"/","headers":{"Host":"h.example","x-a":["1","2"]},"body_base64":"AP8=",
                "source_address":"::1"}"#,
        )
        .unwrap();
        assert_eq!(r.authority().unwrap(), "h.example");
        assert_eq!(
            r.headers,
            vec![("Host".into(), "h.example".into()), ("x-a".into(), "1".into()), ("x-a".into(), "2".into())]
        );
        assert_eq!(r.body_bytes().unwrap(), vec![0, 255]);
        assert_eq!(r.source_socket_address().unwrap(), Some("[::1]:0".parse().unwrap()));
        assert_eq!(r.time_seconds().unwrap(), None);
    }

    #[test]
    fn round_trips_through_json() {
        let r = RecordedRequest {
            method: "GET".into(),
            path: "/x".into(),
            host: Some("h".into()),
            headers: vec![("a".into(), "b".into())],
            ..RecordedRequest::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"method":"GET","path":"/x","host":"h","headers":[["a","b"]]}"#);
        assert_eq!(RecordedRequest::parse_line(&line).unwrap(), r);
    }

    #[test]
    fn bad_lines_and_their_messages() {
        let base = r#""method":"GET","path":"/","host":"h""#;
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "expected ident at line 1 column 2"),
            (r#"{"path":"/","host":"h"}"#.into(), "missing field `method` at line 1 column 23"),
            (format!("{{{base},\"extra\":1}}"), "unknown field `extra`"),
            (r#"{"method":"G T","path":"/","host":"h"}"#.into(), "field `method`: `G T` is not an HTTP method"),
            (r#"{"method":"GET","path":"","host":"h"}"#.into(), "field `path`: must not be empty"),
            (r#"{"method":"GET","path":"/a b","host":"h"}"#.into(), "field `path`: contains a space"),
            (r#"{"method":"GET","path":"/"}"#.into(), "no host: set `host` or a `host` header"),
            (r#"{"method":"GET","path":"/","host":""}"#.into(), "field `host`: `` is empty"),
            (format!("{{{base},\"headers\":[[\":path\",\"/x\"]]}}"), "`:path` is a pseudo-header"),
            (format!("{{{base},\"headers\":[[\"a b\",\"1\"]]}}"), "`a b` is not an HTTP header name"),
            (format!("{{{base},\"headers\":[[\"a\",\"1\\r\\nb: 2\"]]}}"), "the value of `a` contains a control"),
            (format!("{{{base},\"headers\":{{\"a\":1}}}}"), "header `a`: expected a string or an array of strings"),
            (format!("{{{base},\"headers\":\"a\"}}"), "expected a list of [name, value] pairs"),
            (format!("{{{base},\"body\":\"x\",\"body_base64\":\"eA==\"}}"), "`body` and `body_base64` are both set"),
            (format!("{{{base},\"body_base64\":\"***\"}}"), "field `body_base64`: not standard base64"),
            (format!("{{{base},\"source_address\":\"nowhere\"}}"), "field `source_address`: `nowhere` is not"),
            (
                format!("{{{base},\"time\":\"2026-11-28 10:00\"}}"),
                "field `time`: `2026-11-28 10:00` is not an RFC 3339",
            ),
        ];
        for (line, want) in cases {
            let got = err(&line);
            assert!(got.contains(want), "line {line}: got {got:?}, want {want:?}");
        }
    }
}
