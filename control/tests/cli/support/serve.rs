//! A `warden serve` process on loopback for the tests, and a small HTTP/1.1 client (one request per connection,
//! `Connection: close`, or several on one kept-alive connection).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{warden_bin, AUTHORITY};

pub const TOKEN: &str = "test-upload-token-0123456789abcdef";

/// A running `warden serve`, killed when dropped; its stderr goes to `log`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `warden serve` on a free loopback port with extra arguments; waits for its `listening on` line.
pub fn start_with(dir: &Path, jwks: &Path, token_file: &Path, extra: &[&str]) -> Server {
    let log = dir.with_extension(format!("serve-{}.log", std::process::id()));
    let mut child = Command::new(warden_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--authority", AUTHORITY])
        .arg("--dir")
        .arg(dir)
        .arg("--keys")
        .arg(jwks)
        .arg("--upload-token-file")
        .arg(token_file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .or_else(|| line.trim().strip_prefix("listening on https://"))
        .unwrap_or_else(|| panic!("first line {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Server { addr: addr.to_string(), child, log }
}

pub fn start(dir: &Path, jwks: &Path, token_file: &Path) -> Server {
    start_with(dir, jwks, token_file, &[])
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Formats a request; PUT gets a Content-Length.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8], close: bool) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one reply (head, then `Content-Length` bytes of body unless `head_only`, e.g. for a 304).
pub fn read_reply(s: &mut impl std::io::Read) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(n == 1, "connection closed inside a reply head: {:?}", String::from_utf8_lossy(&raw));
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw[..raw.len() - 4].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    let reply = Reply { status, headers, body: Vec::new() };
    let length: usize =
        if status == 304 { 0 } else { reply.header("content-length").map_or(0, |l| l.parse().unwrap()) };
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    Reply { body, ..reply }
}

/// One HTTP/1.1 request over a fresh connection, `Connection: close` (the server keeps connections alive otherwise).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&request(addr, method, path, headers, body, true)).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    read_reply(&mut raw.as_slice())
}

pub fn put(addr: &str, name: &str, token: Option<&str>, body: &[u8]) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(addr, "PUT", &format!("/bundles/{name}.jws"), &headers, body)
}
