//! Path normalization: the same path in many spellings, and every refusal.

use warden_core::path::{normalize, NormalizedPath, PathError};

fn ok(path: &str) -> Result<NormalizedPath, PathError> {
    Ok(NormalizedPath { path: path.to_string(), query: None })
}

fn okq(path: &str, query: &str) -> Result<NormalizedPath, PathError> {
    Ok(NormalizedPath { path: path.to_string(), query: Some(query.to_string()) })
}

#[test]
fn normalization_table() {
    use PathError::*;
    let cases: Vec<(&str, Result<NormalizedPath, PathError>)> = vec![
        // One path, many spellings.
        ("/a/b", ok("/a/b")),
        ("/a//b", ok("/a/b")),
        ("//a///b", ok("/a/b")),
        ("/a/./b", ok("/a/b")),
        ("/./a/b", ok("/a/b")),
        ("/a/c/../b", ok("/a/b")),
        ("/a/c/d/../../b", ok("/a/b")),
        ("/%61/b", ok("/a/b")),
        ("/%61/%62", ok("/a/b")),
        ("/a/%2E/b", ok("/a/b")),
        ("/a/c/%2e%2E/b", ok("/a/b")),
        ("/a/c/.%2E/b", ok("/a/b")),
        ("/a/c/%2E./b", ok("/a/b")),
        // Decoding happens before dot segments are resolved.
        ("/a/%2E%2E/b", ok("/b")),
        ("/a%2Db", ok("/a-b")),
        ("/a%2db", ok("/a-b")),
        ("/%7Euser/%5F_", ok("/~user/__")),
        ("/API/V1", ok("/API/V1")),
        // Other escapes stay encoded, hex upper-cased.
        ("/a%3fb", ok("/a%3Fb")),
        ("/a%3Fb", ok("/a%3Fb")),
        ("/a%20b", ok("/a%20b")),
        ("/caf%c3%a9", ok("/caf%C3%A9")),
        ("/a%25/b", ok("/a%25/b")),
        ("/a%252F", ok("/a%252F")),
        ("/q%3Dx%26y", ok("/q%3Dx%26y")),
        // Trailing slash and dot segments at the end.
        ("/", ok("/")),
        ("//", ok("/")),
        ("/a/", ok("/a/")),
        ("/a//", ok("/a/")),
        ("/a/b/..", ok("/a/")),
        ("/a/b/.", ok("/a/b/")),
        ("/a/..", ok("/")),
        ("/.", ok("/")),
        // Sub-delims, ':' and '@' are plain path characters.
        ("/v1/users/me@acme.example:42,x=1,y=(2)!$&'*+", ok("/v1/users/me@acme.example:42,x=1,y=(2)!$&'*+")),
        // The query is split off at the first '?' and kept verbatim.
        ("/a/b?x=1&y=%2f", okq("/a/b", "x=1&y=%2f")),
        ("/a/./b?/../c", okq("/a/b", "/../c")),
        ("/a?", okq("/a", "")),
        ("/a?b?c", okq("/a", "b?c")),
        ("/%2E%2E?x", Err(AboveRoot)),
        // Refusals.
        ("", Err(Empty)),
        ("a/b", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        ("http://host/a", Err(NotAbsolute)),
        ("?x=1", Err(NotAbsolute)),
        ("/a#frag", Err(Fragment { position: 2 })),
        ("/a?x#frag", Err(Fragment { position: 4 })),
        ("/a%2Fb", Err(EncodedSlash { position: 2 })),
        ("/a%2fb", Err(EncodedSlash { position: 2 })),
        ("/a/..%2F..%2Fetc", Err(EncodedSlash { position: 5 })),
        ("/a%5Cb", Err(EncodedBackslash { position: 2 })),
        ("/a%5cb", Err(EncodedBackslash { position: 2 })),
        ("/a\\b", Err(Backslash { position: 2 })),
        ("/a%00b", Err(EncodedControl { position: 2, byte: 0 })),
        ("/a%0Ab", Err(EncodedControl { position: 2, byte: 0x0a })),
        ("/a%7f", Err(EncodedControl { position: 2, byte: 0x7f })),
        ("/..", Err(AboveRoot)),
        ("/../a", Err(AboveRoot)),
        ("/a/../..", Err(AboveRoot)),
        ("/a/../../b", Err(AboveRoot)),
        ("/%2e%2e/etc/passwd", Err(AboveRoot)),
        ("/a%G1", Err(InvalidEscape { position: 2 })),
        ("/a%4", Err(InvalidEscape { position: 2 })),
        ("/a%", Err(InvalidEscape { position: 2 })),
        ("/a%%41", Err(InvalidEscape { position: 2 })),
        ("/caf\u{e9}", Err(InvalidChar { position: 4, byte: 0xc3 })),
        ("/a b", Err(InvalidChar { position: 2, byte: b' ' })),
        ("/a\tb", Err(InvalidChar { position: 2, byte: b'\t' })),
        ("/a\0", Err(InvalidChar { position: 2, byte: 0 })),
        ("/a?x=\u{e9}", Err(InvalidChar { position: 5, byte: 0xc3 })),
        ("/a?x y", Err(InvalidChar { position: 4, byte: b' ' })),
        ("/a<b>", Err(InvalidChar { position: 2, byte: b'<' })),
        ("/a/{id}", Err(InvalidChar { position: 3, byte: b'{' })),
        ("/a|b", Err(InvalidChar { position: 2, byte: b'|' })),
        ("/a\"b", Err(InvalidChar { position: 2, byte: b'"' })),
        // Path parameters: servlet containers strip `;...` before resolving dot segments and matching.
        ("/api/v2/contacts/..;", Err(Semicolon { position: 19 })),
        ("/api/v2/contacts/.;", Err(Semicolon { position: 18 })),
        ("/api/..;x=1/admin", Err(Semicolon { position: 7 })),
        ("/api/..%3B/admin", Err(Semicolon { position: 7 })),
        ("/api/admin;jsessionid=1", Err(Semicolon { position: 10 })),
        ("/api/admin%3bx", Err(Semicolon { position: 10 })),
        ("/api?a=1;b=2", okq("/api", "a=1;b=2")),
    ];
    let mut failures = Vec::new();
    for (raw, want) in &cases {
        let got = normalize(raw);
        if &got != want {
            failures.push(format!("{raw:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn normalizing_twice_changes_nothing() {
    for raw in ["/a//b/./c/../d/", "/%61%2D%7e?q=%2F", "/caf%c3%a9/x%3f", "/a/b/..", "/"] {
        let once = normalize(raw).unwrap();
        let twice = normalize(&once.request_path()).unwrap();
        assert_eq!(once, twice, "{raw}");
    }
}

#[test]
fn request_path_reassembles_path_and_query() {
    assert_eq!(normalize("/a/./b?x=1&y=%2f").unwrap().request_path(), "/a/b?x=1&y=%2f");
    assert_eq!(normalize("/a?").unwrap().request_path(), "/a?");
    assert_eq!(normalize("/%61").unwrap().request_path(), "/a");
    // `is_request_path` says whether the raw target is already what would be forwarded.
    for raw in ["/a/./b?x=1", "/a?", "/%61", "/a/b", "/a/b?x", "/a//b", "/a?x?y", "/", "/a/b/"] {
        let n = normalize(raw).unwrap();
        assert_eq!(n.is_request_path(raw), n.request_path() == raw, "{raw}");
    }
}

#[test]
fn errors_have_codes_and_say_where() {
    let cases = [
        ("", "path_empty", "empty request path"),
        ("x", "path_not_absolute", "request path does not start with '/'"),
        ("/a#b", "path_fragment", "request path has a '#' fragment at byte 2"),
        ("/a b", "path_invalid_char", "request path has a character not allowed in a path (byte 0x20) at byte 2"),
        ("/a\\b", "path_backslash", "request path has a backslash at byte 2"),
        ("/a%zz", "path_invalid_escape", "request path has a '%' not followed by two hex digits at byte 2"),
        ("/a%2f", "path_encoded_slash", "request path has an encoded slash (%2F) at byte 2"),
        ("/a%5c", "path_encoded_backslash", "request path has an encoded backslash (%5C) at byte 2"),
        ("/a%00", "path_encoded_control", "request path has an encoded control character (%00) at byte 2"),
        ("/..", "path_above_root", "request path climbs above the root with '..'"),
        (
            "/a;b",
            "path_semicolon",
            "request path has a path parameter (';' or %3B) at byte 2; path parameters are refused",
        ),
    ];
    for (raw, code, message) in cases {
        let err = normalize(raw).unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), (code, message), "{raw:?}");
    }
}
