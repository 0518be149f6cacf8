//! Request path normalization: the one normalized form that is matched and forwarded.
//!
//! [`normalize`] takes the request target as received (`:path`) and returns the path that tool routes are matched
//! against and the query, kept verbatim. The filter forwards exactly [`NormalizedPath::request_path`] upstream, so the
//! gateway and the tool never disagree about which path was called. Rules, applied in this order:
//!
//! 1. The target must be non-empty (`path_empty`) and start with `/` (`path_not_absolute`: no `*`, no absolute-form
//!    `http://...`). A `#` anywhere is refused (`path_fragment`: clients never send fragments; Envoy rejects them).
//! 2. Every byte must be visible ASCII: raw control characters, space and non-ASCII bytes are refused
//!    (`path_invalid_char`), in the query too.
//! 3. The query starts at the first `?`; it is split off and kept byte for byte (not decoded, not re-encoded).
//! 4. In the path, a raw `\` is refused (`path_backslash`: some servers treat it as `/`); every other raw byte must
//!    be an RFC 3986 `pchar` or `/` (`path_invalid_char` for `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}`).
//! 5. Percent-escapes: `%` must be followed by two hex digits (`path_invalid_escape`: `%G1`, `%4`, a lone `%`).
//!    Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%61` → `a`, `%2D` → `-`, `%2E` → `.`);
//!    `%2F`/`%2f` (encoded slash) and `%5C`/`%5c` (encoded backslash) are refused (`path_encoded_slash`,
//!    `path_encoded_backslash`), as are encoded control characters `%00`-`%1F` and `%7F` (`path_encoded_control`);
//!    every other escape (reserved characters such as `%3F` or `%20`, and UTF-8 bytes such as `%C3%A9`) stays encoded
//!    with its hex digits upper-cased, so equal paths have one spelling.
//! 6. Path parameters are refused: a `;` or `%3B` anywhere in the path (`path_semicolon`). Servlet containers
//!    (Tomcat, Jetty, Spring) strip `;params` from each segment before resolving it, so `/a/..;/admin` or
//!    `/api/admin;x` would reach another resource than the one matched here.
//! 7. Dot segments are resolved *after* decoding (RFC 3986 section 5.2.4), so an encoded `%2E%2E` is a `..` like any
//!    other and cannot smuggle a traversal past the matcher: `/a/%2E%2E/b` is `/b`. A `..` that would climb above the
//!    root is refused (`path_above_root`), never clamped. Runs of `/` are merged into one (empty segments dropped).
//! 8. A trailing `/` is kept (`/a/` stays `/a/`, `/a` stays `/a`); a path ending in a `.` or `..` segment ends with
//!    `/` (`/a/b/..` is `/a/`), as in RFC 3986.

use std::fmt;

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// The normalized path, always starting with `/`; what tool routes are matched against.
    pub path: String,
    /// The query (without the `?`), verbatim; `None` when the target had no `?`.
    pub query: Option<String>,
}

impl NormalizedPath {
    /// What goes upstream: the path plus `?` and the query, if there was one.
    pub fn request_path(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }

    /// Whether [`NormalizedPath::request_path`] is `raw` (nothing to rewrite), without building it.
    pub fn is_request_path(&self, raw: &str) -> bool {
        match (&self.query, raw.strip_prefix(self.path.as_str())) {
            (None, Some(rest)) => rest.is_empty(),
            (Some(q), Some(rest)) => rest.strip_prefix('?') == Some(q.as_str()),
            (_, None) => false,
        }
    }
}

/// Why a request target was refused. `position` is the byte offset in the raw target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathError {
    /// The target is empty.
    Empty,
    /// The target does not start with `/`.
    NotAbsolute,
    /// The target has a `#fragment`.
    Fragment { position: usize },
    /// A control character, space or non-ASCII byte, or an ASCII character not allowed in a path.
    InvalidChar { position: usize, byte: u8 },
    /// A raw backslash in the path.
    Backslash { position: usize },
    /// `%` not followed by two hex digits.
    InvalidEscape { position: usize },
    /// `%2F`: an encoded `/`.
    EncodedSlash { position: usize },
    /// `%5C`: an encoded `\`.
    EncodedBackslash { position: usize },
    /// `%00`-`%1F` or `%7F`: an encoded control character.
    EncodedControl { position: usize, byte: u8 },
    /// A `..` segment climbs above the root.
    AboveRoot,
    /// `;` or `%3B` in the path: path parameters, which servlet containers strip before resolving the path.
    Semicolon { position: usize },
}

impl PathError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            PathError::Empty => "path_empty",
            PathError::NotAbsolute => "path_not_absolute",
            PathError::Fragment { .. } => "path_fragment",
            PathError::InvalidChar { .. } => "path_invalid_char",
            PathError::Backslash { .. } => "path_backslash",
            PathError::InvalidEscape { .. } => "path_invalid_escape",
            PathError::EncodedSlash { .. } => "path_encoded_slash",
            PathError::EncodedBackslash { .. } => "path_encoded_backslash",
            PathError::EncodedControl { .. } => "path_encoded_control",
            PathError::AboveRoot => "path_above_root",
            PathError::Semicolon { .. } => "path_semicolon",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "empty request path"),
            PathError::NotAbsolute => write!(f, "request path does not start with '/'"),
            PathError::Fragment { position } => write!(f, "request path has a '#' fragment at byte {position}"),
            PathError::InvalidChar { position, byte } => {
                write!(f, "request path has a character not allowed in a path (byte 0x{byte:02X}) at byte {position}")
            }
            PathError::Backslash { position } => write!(f, "request path has a backslash at byte {position}"),
            PathError::InvalidEscape { position } => {
                write!(f, "request path has a '%' not followed by two hex digits at byte {position}")
            }
            PathError::EncodedSlash { position } => {
                write!(f, "request path has an encoded slash (%2F) at byte {position}")
            }
            PathError::EncodedBackslash { position } => {
                write!(f, "request path has an encoded backslash (%5C) at byte {position}")
            }
            PathError::EncodedControl { position, byte } => {
                write!(f, "request path has an encoded control character (%{byte:02X}) at byte {position}")
            }
            PathError::AboveRoot => write!(f, "request path climbs above the root with '..'"),
            PathError::Semicolon { position } => {
                write!(
                    f,
                    "request path has a path parameter (';' or %3B) at byte {position}; path parameters are refused"
                )
            }
        }
    }
}

impl std::error::Error for PathError {}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` without `%` (handled separately): unreserved, sub-delims, `:` and `@`.
fn is_plain_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
        || matches!(b, b':' | b'@')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes a request target (see the module doc for the rules).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes[0] != b'/' {
        return Err(PathError::NotAbsolute);
    }
    for (position, &byte) in bytes.iter().enumerate() {
        if byte == b'#' {
            return Err(PathError::Fragment { position });
        }
        if !(0x21..0x7f).contains(&byte) {
            return Err(PathError::InvalidChar { position, byte });
        }
    }
    let (path_part, query) = match raw.find('?') {
        Some(q) => (&raw[..q], Some(raw[q + 1..].to_string())),
        None => (raw, None),
    };

    // Decode into segments; each segment is the decoded-and-canonically-encoded text between slashes.
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut trailing_slash = false;
    let path = path_part.as_bytes();
    let mut i = 0;
    // Closes the current segment: resolves `.` and `..`, drops empty ones.
    // Returns whether it was a dot segment.
    let close = |segment: &mut String, segments: &mut Vec<String>| -> Result<bool, PathError> {
        let seg = std::mem::take(segment);
        match seg.as_str() {
            "" => Ok(false),
            "." => Ok(true),
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                Ok(true)
            }
            _ => {
                segments.push(seg);
                Ok(false)
            }
        }
    };
    // Skip the leading '/'.
    i += 1;
    while i < path.len() {
        let b = path[i];
        match b {
            b'/' => {
                close(&mut current, &mut segments)?;
                trailing_slash = true;
                i += 1;
                continue;
            }
            b'\\' => return Err(PathError::Backslash { position: i }),
            b';' => return Err(PathError::Semicolon { position: i }),
            b'%' => {
                let hi = path.get(i + 1).copied().and_then(hex_value);
                let lo = path.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidEscape { position: i });
                };
                let value = hi * 16 + lo;
                match value {
                    b'/' => return Err(PathError::EncodedSlash { position: i }),
                    b'\\' => return Err(PathError::EncodedBackslash { position: i }),
                    b';' => return Err(PathError::Semicolon { position: i }),
                    0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl { position: i, byte: value }),
                    v if is_unreserved(v) => current.push(char::from(v)),
                    v => {
                        current.push('%');
                        current.push_str(&format!("{v:02X}"));
                    }
                }
                i += 3;
            }
            b if is_plain_pchar(b) => {
                current.push(char::from(b));
                i += 1;
            }
            byte => return Err(PathError::InvalidChar { position: i, byte }),
        }
        trailing_slash = false;
    }
    // The last segment: a final `.`/`..` leaves a trailing slash (RFC 3986 5.2.4).
    let dot_at_end = close(&mut current, &mut segments)?;
    let mut out = String::with_capacity(path_part.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash || dot_at_end {
        out.push('/');
    }
    Ok(NormalizedPath { path: out, query })
}
