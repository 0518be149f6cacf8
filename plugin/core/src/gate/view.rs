//! The request as the gate sees it: one pass over the header map ([`RequestView::scan`]), values kept as bytes so
//! that a client's non-UTF-8 value can never trap the host SDK, plus the connection's mTLS peer.

use crate::approval::ApprovalFailure;
use crate::config::{GateConfig, RESERVED_HEADER_PREFIX};
use crate::identity::token_in;

/// A single-valued header (or pseudo-header) as found in the header map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Field<'h> {
    #[default]
    Missing,
    Present(&'h str),
    /// Repeated, or not UTF-8: the request cannot be read safely.
    Unreadable,
}

impl<'h> Field<'h> {
    fn set(&mut self, value: &'h [u8]) {
        *self = match (*self, std::str::from_utf8(value)) {
            (Field::Missing, Ok(v)) => Field::Present(v),
            _ => Field::Unreadable,
        };
    }

    /// The value, or `""` when missing or unreadable (for the record).
    pub fn or_empty(self) -> &'h str {
        match self {
            Field::Present(v) => v,
            Field::Missing | Field::Unreadable => "",
        }
    }

    /// The value when present and readable.
    pub fn value(self) -> Option<&'h str> {
        match self {
            Field::Present(v) => Some(v),
            Field::Missing | Field::Unreadable => None,
        }
    }
}

/// A credential header (agent token, Transaction Token, approval) as found in the header map: bytes, not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenHeader<'h> {
    #[default]
    Absent,
    One(&'h [u8]),
    /// More than one value: ambiguous, refused.
    Repeated,
}

impl<'h> TokenHeader<'h> {
    fn add(self, value: &'h [u8]) -> TokenHeader<'h> {
        match self {
            TokenHeader::Absent => TokenHeader::One(value),
            TokenHeader::One(_) | TokenHeader::Repeated => TokenHeader::Repeated,
        }
    }
}

/// What the gate reads from the request headers, gathered in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestView<'h> {
    pub method: Field<'h>,
    pub path: Field<'h>,
    pub authority: Field<'h>,
    pub token: TokenHeader<'h>,
    /// The Transaction Token header (task context).
    pub txn_token: TokenHeader<'h>,
    /// The step-up approval header.
    pub approval: TokenHeader<'h>,
    /// `Content-Type`, `Mcp-Method` and `Mcp-Name` (MCP requests).
    pub content_type: Field<'h>,
    pub mcp_method: Field<'h>,
    pub mcp_name: Field<'h>,
    /// `Content-Encoding`: a body decided on (MCP, step-up) must be the bytes that are forwarded.
    pub content_encoding: Field<'h>,
    /// `Origin` and `Access-Control-Request-Method`: with `OPTIONS` and no body, a CORS preflight (Fetch standard).
    pub origin: Field<'h>,
    pub cors_request_method: Field<'h>,
    /// An `Upgrade` header was sent (a protocol switch would tunnel past the body decision).
    pub upgrade: bool,
    /// Names of the headers removed before the request goes upstream: client-supplied `x-warden-*` ones and the
    /// approval header (a credential for the gateway, not for the tool).
    pub reserved: Vec<&'h str>,
}

impl<'h> RequestView<'h> {
    /// One pass over the header pairs as the host gives them (names lower case, values as bytes), reading the token
    /// headers `config` names.
    pub fn scan(headers: &'h [(String, Vec<u8>)], config: &GateConfig) -> RequestView<'h> {
        let mut r = RequestView::default();
        for (name, value) in headers {
            match name.as_str() {
                ":method" => r.method.set(value),
                ":path" => r.path.set(value),
                ":authority" => r.authority.set(value),
                n if n.eq_ignore_ascii_case(&config.token_header) => r.token = r.token.add(value),
                n if n.eq_ignore_ascii_case(&config.txn_token_header) => r.txn_token = r.txn_token.add(value),
                n if n.eq_ignore_ascii_case(&config.approval_header) => {
                    r.approval = r.approval.add(value);
                    if !r.reserved.contains(&n) {
                        r.reserved.push(n);
                    }
                }
                n if is_reserved(n) && !r.reserved.contains(&n) => r.reserved.push(n),
                n if n.eq_ignore_ascii_case("content-type") => r.content_type.set(value),
                n if n.eq_ignore_ascii_case("mcp-method") => r.mcp_method.set(value),
                n if n.eq_ignore_ascii_case("mcp-name") => r.mcp_name.set(value),
                n if n.eq_ignore_ascii_case("content-encoding") => r.content_encoding.set(value),
                n if n.eq_ignore_ascii_case("upgrade") => r.upgrade = true,
                n if n.eq_ignore_ascii_case("origin") => r.origin.set(value),
                n if n.eq_ignore_ascii_case("access-control-request-method") => r.cors_request_method.set(value),
                _ => {}
            }
        }
        r
    }
}

impl RequestView<'_> {
    /// Whether the request is a CORS preflight (Fetch standard): `OPTIONS` with one `Origin` and one
    /// `Access-Control-Request-Method`; `end_of_stream`: no body follows the headers (a preflight has none).
    pub fn cors_preflight(&self, end_of_stream: bool) -> bool {
        end_of_stream
            && self.method == Field::Present("OPTIONS")
            && self.origin.value().is_some()
            && self.cors_request_method.value().is_some()
    }

    /// Whether the body is declared encoded: a `Content-Encoding` other than `identity` (repeated or unreadable
    /// counts as encoded).
    pub fn encoded_body(&self) -> bool {
        match self.content_encoding {
            Field::Missing => false,
            Field::Present(v) => !v.trim().eq_ignore_ascii_case("identity"),
            Field::Unreadable => true,
        }
    }
}

/// `x-warden-*` in any case, with `_` read as `-` (`x_warden_agent`, `X-Warden_Task`): CGI, WSGI and many
/// frameworks map both to the same name, so an upstream would read any of them as the filter's own header.
pub(crate) fn is_reserved(name: &str) -> bool {
    let prefix = RESERVED_HEADER_PREFIX.as_bytes();
    name.len() >= prefix.len()
        && name.bytes().zip(prefix).all(|(b, &p)| {
            let b = if b == b'_' { b'-' } else { b.to_ascii_lowercase() };
            b == p
        })
}

/// The step-up approval a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No approval header.
    Absent,
    /// One approval token (the JWS, without `Bearer `).
    Token(String),
    /// The header is there but unusable (repeated, not UTF-8, not a token).
    Refused(ApprovalFailure),
}

impl Presented {
    /// From the approval header: a bare JWS or `Bearer <jws>`.
    pub fn from_header(header: TokenHeader<'_>) -> Presented {
        match header {
            TokenHeader::Absent => Presented::Absent,
            TokenHeader::Repeated => Presented::Refused(ApprovalFailure::Ambiguous),
            TokenHeader::One(bytes) => match std::str::from_utf8(bytes).ok().map(|v| token_in(v, "")) {
                Some(Ok(token)) => Presented::Token(token.to_string()),
                _ => Presented::Refused(ApprovalFailure::Malformed),
            },
        }
    }
}

/// `application/json`, any case, optionally with parameters (`; charset=utf-8`; another charset is refused).
pub fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        !k.trim().eq_ignore_ascii_case("charset") || v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_from_header() {
        assert_eq!(Presented::from_header(TokenHeader::Absent), Presented::Absent);
        assert_eq!(Presented::from_header(TokenHeader::Repeated), Presented::Refused(ApprovalFailure::Ambiguous));
        assert_eq!(Presented::from_header(TokenHeader::One(b"a.b.c")), Presented::Token("a.b.c".into()));
        assert_eq!(Presented::from_header(TokenHeader::One(b"Bearer a.b.c")), Presented::Token("a.b.c".into()));
        for bad in [&b""[..], b"\xff\xfe", b"a b c"] {
            assert_eq!(
                Presented::from_header(TokenHeader::One(bad)),
                Presented::Refused(ApprovalFailure::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_types() {
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=UTF-8", true),
            ("application/json;charset=\"utf-8\"", true),
            ("application/json; charset=latin1", false),
            ("text/plain", false),
            ("application/json-seq", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            assert_eq!(is_json(ct), ok, "{ct}");
        }
    }

    #[test]
    fn one_scan_reads_every_header_and_stays_byte_safe() {
        let h: Vec<(String, Vec<u8>)> = vec![
            (":method".to_string(), b"GET".to_vec()),
            (":path".to_string(), b"/a".to_vec()),
            (":authority".to_string(), vec![0xff, 0xfe]),
            ("authorization".to_string(), vec![0xc3, 0x28]),
            ("x-warden-agent".to_string(), b"spoofed".to_vec()),
            ("X-Warden-Task".to_string(), b"spoofed".to_vec()),
            ("x-warden-agent".to_string(), b"again".to_vec()),
            ("x-wardenish".to_string(), b"not ours".to_vec()),
            ("x_warden_agent".to_string(), b"spoofed".to_vec()),
            ("X-Warden_Task".to_string(), b"spoofed".to_vec()),
            ("x_wardenx".to_string(), b"not ours".to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
            ("mcp-method".to_string(), b"a".to_vec()),
            ("mcp-method".to_string(), b"b".to_vec()),
        ];
        let v = RequestView::scan(&h, &GateConfig::new("prod"));
        assert_eq!(v.method, Field::Present("GET"));
        assert_eq!(v.authority, Field::Unreadable);
        assert_eq!(v.token, TokenHeader::One(&[0xc3, 0x28]));
        assert_eq!(v.reserved, vec!["x-warden-agent", "X-Warden-Task", "x_warden_agent", "X-Warden_Task"]);
        assert_eq!(v.content_type, Field::Present("application/json"));
        assert_eq!(v.mcp_method, Field::Unreadable);
        assert_eq!(v.mcp_name, Field::Missing);
    }
}
