//! A small blocking HTTP/1.1 client for tests through a real proxy: sends an [`HttpRequest`] (the same value the
//! in-process host takes, so one scenario can run through both), on a fresh connection or on a kept-alive
//! [`Connection`]; a body given in chunks (`HttpRequest::chunks`) or with trailers goes out chunked, piece by
//! piece.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::abi::Headers;
use crate::http_call::read_response;
use crate::stream::HttpRequest;

/// What came back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("writing the request to {0}: {1}")]
    Write(SocketAddr, std::io::Error),
    #[error("{0} closed the connection or sent no valid HTTP/1.1 response")]
    NoResponse(SocketAddr),
}

/// The request on the wire: request line, `host` from `authority`, the headers, framing, body.
fn write_request(w: &mut impl Write, req: &HttpRequest, close: bool) -> std::io::Result<()> {
    let mut head = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", req.method, req.path, req.authority);
    let framed = req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding"));
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = req.body_chunks.is_some() || !req.trailers.is_empty();
    if chunked {
        if !framed {
            head.push_str("transfer-encoding: chunked\r\n");
        }
    } else if !framed && (!req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH")) {
        head.push_str(&format!("content-length: {}\r\n", req.body.len()));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !chunked {
        w.write_all(&req.body)?;
        return w.flush();
    }
    w.flush()?;
    let sizes = req.body_chunks.clone().unwrap_or_else(|| vec![req.body.len()]);
    let mut pos = 0;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for n in sizes {
        let end = (pos + n).min(req.body.len());
        pieces.push(&req.body[pos..end]);
        pos = end;
    }
    if pos < req.body.len() {
        pieces.push(&req.body[pos..]);
    }
    for p in pieces.into_iter().filter(|p| !p.is_empty()) {
        w.write_all(format!("{:x}\r\n", p.len()).as_bytes())?;
        w.write_all(p)?;
        w.write_all(b"\r\n")?;
        w.flush()?;
        // A pause, so that the proxy sees the pieces apart.
        std::thread::sleep(Duration::from_millis(15));
    }
    w.write_all(b"0\r\n")?;
    for (k, v) in &req.trailers {
        w.write_all(format!("{k}: {v}\r\n").as_bytes())?;
    }
    w.write_all(b"\r\n")?;
    w.flush()
}

/// A kept-alive connection: requests go one after the other on the same TCP connection.
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Result<Connection, ClientError> {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| ClientError::Connect(addr, e))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(stream.try_clone().map_err(|e| ClientError::Connect(addr, e))?);
        Ok(Connection { addr, stream, reader })
    }

    /// Sends one request and reads its response, keeping the connection open.
    pub fn send(&mut self, req: &HttpRequest) -> Result<Response, ClientError> {
        self.exchange(req, false)
    }

    fn exchange(&mut self, req: &HttpRequest, close: bool) -> Result<Response, ClientError> {
        // A proxy may answer (and stop reading) before the whole body is written: a failed write still reads
        // whatever response arrived.
        let written = write_request(&mut self.stream, req, close);
        let r = match (read_response(&mut self.reader, req.method == "HEAD"), written) {
            (Some(r), _) => r,
            (None, Err(e)) => return Err(ClientError::Write(self.addr, e)),
            (None, Ok(())) => return Err(ClientError::NoResponse(self.addr)),
        };
        let status = r.status().unwrap_or(0);
        let headers = r.headers.into_iter().filter(|(k, _)| k != ":status").collect();
        Ok(Response { status, headers, body: r.body })
    }
}

/// Sends one request on a fresh connection (`connection: close`).
pub fn send(addr: SocketAddr, req: &HttpRequest) -> Result<Response, ClientError> {
    Connection::open(addr)?.exchange(req, true)
}
