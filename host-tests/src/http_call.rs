//! Outbound HTTP/1.1 for `proxy_http_call` (run on a background thread by `hostcalls`) and `HttpUpstream`: a
//! blocking client with Envoy's failure shapes (refused connection → 503 reply; reset → no response).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::abi::Headers;

/// Envoy's body for a refused connection.
pub const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
/// Envoy's body for a timed-out call.
pub const TIMEOUT_BODY: &str = "upstream request timeout";

/// A response as the filter sees it: `headers` starts with `:status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

impl HttpResponse {
    /// A reply Envoy's router would synthesize (`content-length`, `content-type: text/plain`).
    pub fn synthesized(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            headers: vec![
                (":status".into(), status.to_string()),
                ("content-length".into(), body.len().to_string()),
                ("content-type".into(), "text/plain".into()),
            ],
            body: body.as_bytes().to_vec(),
            trailers: Vec::new(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok())
    }
}

/// How an outbound call ended.
#[derive(Clone, Debug)]
pub enum CallResult {
    Response(HttpResponse),
    /// The connection was reset or the reply was not HTTP (or announced a body over [`MAX_RESPONSE_BODY`]):
    /// delivered as (0, 0, 0).
    Reset,
}

/// The largest response body the host reads (from an http call or the dev gateway's upstream). A larger
/// `content-length` or chunk is refused before anything is allocated for it: a peer cannot make the host reserve
/// memory it announced but never sent.
pub const MAX_RESPONSE_BODY: usize = 64 << 20;

/// Timeouts of the blocking client in real time. The connect timeout is Envoy's default cluster `connect_timeout`
/// (5 s); the call's own timeout is kept by the host on its clock (a 504 when it passes, see `Worker::fire_due`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The read/write timeout of [`request`] (the dev gateway's upstream and control requests).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket timeout of a `proxy_http_call` with this timeout (ms): never shorter than the call's own timeout
/// (the host answers 504 on its clock when that passes, as Envoy does; the socket must not give up first), and none
/// for a call without a timeout (`0`: Envoy waits as long as the upstream keeps the connection).
pub fn call_io_timeout(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms != 0).then(|| IO_TIMEOUT.max(Duration::from_millis(u64::from(timeout_ms)) + Duration::from_secs(1)))
}

/// Performs one HTTP/1.1 request (socket timeouts 30 s). `headers` must contain `:method`, `:path` and
/// `:authority`.
pub fn request(addr: SocketAddr, headers: &Headers, body: &[u8]) -> CallResult {
    request_with_timeout(addr, headers, body, Some(IO_TIMEOUT))
}

/// [`request`] with this read/write timeout (`None`: wait as long as the peer keeps the connection open).
pub fn request_with_timeout(addr: SocketAddr, headers: &Headers, body: &[u8], io: Option<Duration>) -> CallResult {
    let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            return CallResult::Response(HttpResponse::synthesized(503, CONNECT_FAILURE_BODY));
        }
    };
    let _ = stream.set_read_timeout(io);
    let _ = stream.set_write_timeout(io);
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    let mut head = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", get(":method"), get(":path"), get(":authority"));
    let mut has_length = false;
    for (k, v) in headers {
        if k.starts_with(':') || k == "host" || k == "connection" || k == "transfer-encoding" {
            continue;
        }
        if k == "content-length" {
            has_length = true;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length && (!body.is_empty() || matches!(get(":method"), "POST" | "PUT" | "PATCH")) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);
    if stream.write_all(&wire).is_err() {
        return CallResult::Reset;
    }
    match read_response(BufReader::new(stream), get(":method") == "HEAD") {
        Some(r) => CallResult::Response(r),
        None => CallResult::Reset,
    }
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line).ok()?;
    if n == 0 || !line.ends_with(b"\n") {
        return None;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).ok()
}

/// Reads exactly `len` bytes, growing the buffer as they arrive (never allocating what was only announced).
fn read_body(r: &mut impl BufRead, len: usize, body: &mut Vec<u8>) -> Option<()> {
    if len > MAX_RESPONSE_BODY.saturating_sub(body.len()) {
        return None;
    }
    let got = r.take(len as u64).read_to_end(body).ok()?;
    (got == len).then_some(())
}

/// Reads an HTTP/1.x response; None when the connection ends early, the bytes are not HTTP, or the body is over
/// [`MAX_RESPONSE_BODY`]. The response to a `HEAD` (`head`) has no body, whatever its `content-length` says.
pub fn read_response(mut r: impl BufRead, head: bool) -> Option<HttpResponse> {
    let status_line = read_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    if !(100..=999).contains(&status) {
        return None;
    }
    let mut headers = vec![(":status".to_string(), status.to_string())];
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        // no body
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(&mut r)?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                loop {
                    let line = read_line(&mut r)?;
                    if line.is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':')?;
                    trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                break;
            }
            read_body(&mut r, size, &mut body)?;
            read_line(&mut r)?;
        }
        headers.retain(|(k, _)| k != "transfer-encoding");
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().ok()?;
        read_body(&mut r, len, &mut body)?;
    } else {
        (&mut r).take(MAX_RESPONSE_BODY as u64 + 1).read_to_end(&mut body).ok()?;
        if body.len() > MAX_RESPONSE_BODY {
            return None;
        }
    }
    Some(HttpResponse { headers, body, trailers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi"[..], false).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.body, b"hi");
        assert!(r.headers.contains(&("x-a".into(), "b".into())));
        let r = read_response(
            &b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\nx-t: 1\r\n\r\n"[..],
            false,
        )
        .unwrap();
        assert_eq!(r.body, b"abc");
        assert_eq!(r.trailers, vec![("x-t".to_string(), "1".to_string())]);
    }

    #[test]
    fn garbage_and_truncation_are_resets() {
        assert!(read_response(&b"garbage\r\n\r\n"[..], false).is_none());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab"[..], false).is_none());
        assert!(read_response(&b""[..], false).is_none());
    }

    #[test]
    fn a_head_response_has_no_body_whatever_its_content_length() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"[..], true).unwrap();
        assert_eq!(r.status(), Some(200));
        assert!(r.body.is_empty());
        assert!(r.headers.contains(&("content-length".into(), "1234".into())));
    }

    #[test]
    fn an_announced_body_over_the_limit_is_refused_without_allocating_it() {
        // usize::MAX would abort the process if it were allocated up front.
        let huge = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nab", usize::MAX);
        assert!(read_response(huge.as_bytes(), false).is_none());
        let over = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nab", MAX_RESPONSE_BODY + 1);
        assert!(read_response(over.as_bytes(), false).is_none());
        let chunk = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffff\r\nab";
        assert!(read_response(chunk.as_bytes(), false).is_none());
    }
}
