//! `warden serve` under pressure, as a real process on loopback: slow clients (slowloris on the head and on the
//! body), sizes checked from headers, the connection limit, keep-alive, long polling (held until a new revision,
//! ended by the wait, bounded in number, woken by a file copied in by hand), TLS, and the upload log line.
//!
//! No test measures a duration: a slow client is one that is still sending when the assertion is made, and a
//! client's own read timeout is only there so that a server that hangs fails the test instead of hanging it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::serve::*;
use crate::support::*;
use warden_core::envelope::{sha256_hex, Algorithm, SigningKey};

/// A directory with `support.jws` at revision 5, the key that signs it, and a running server.
struct Setup {
    scratch: Scratch,
    dir: std::path::PathBuf,
    jwks: std::path::PathBuf,
    token_file: std::path::PathBuf,
    key: SigningKey,
}

fn setup(label: &str) -> Setup {
    let scratch = Scratch::new(label);
    let (_, jwks, key) = scratch.key(Algorithm::EdDSA, "authority-1");
    let dir = scratch.path("bundles");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("support.jws"), sign(&bundle(5), &key)).unwrap();
    let token_file = scratch.write("token", format!("{TOKEN}\n"));
    Setup { scratch, dir, jwks, token_file, key }
}

impl Setup {
    fn start(&self, extra: &[&str]) -> Server {
        start_with(&self.dir, &self.jwks, &self.token_file, extra)
    }
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"sha256-{}\"", sha256_hex(bytes))
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // Only so that a hanging server fails the test rather than hanging it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Clients that send a request head one byte at a time, forever, until stopped.
struct Trickle {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<bool>>,
}

impl Trickle {
    fn start(addr: &str, n: usize) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (addr, stop) = (addr.to_string(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(&addr).unwrap();
                    let head = format!("GET /bundles/support.jws HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
                    for b in head.bytes().chain(std::iter::repeat(b'a')) {
                        if stop.load(Ordering::Relaxed) {
                            return true; // still connected and sending when told to stop
                        }
                        if s.write_all(&[b]).is_err() {
                            return false; // the server closed the connection
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    true
                })
            })
            .collect();
        Trickle { stop, threads }
    }

    /// Stops the clients; how many were still sending.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).filter(|alive| *alive).count()
    }
}

/// Issue 19 item 15: the old server had 8 worker threads and a 10 s timeout per read, so 8 clients sending a byte
/// every few seconds held every thread and a gateway's fetch waited. Now slow heads cost no thread: a fetch is
/// answered while 16 slow clients are still sending.
#[test]
fn slow_clients_do_not_block_a_gateway_fetch() {
    let s = setup("serve-slowloris");
    let server = s.start(&[]);
    let trickle = Trickle::start(&server.addr, 16);
    std::thread::sleep(Duration::from_millis(500)); // let them connect and start sending
    let mut c = connect(&server.addr);
    c.write_all(&request(&server.addr, "GET", "/bundles/support.jws", &[], b"", true)).unwrap();
    let r = read_reply(&mut c);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(s.dir.join("support.jws")).unwrap());
    let still_sending = trickle.stop();
    assert_eq!(still_sending, 16, "the fetch must have been answered while the slow clients were still sending");
}

/// The head has a total deadline, not one per read: a client that keeps sending a byte every 100 ms is cut off.
#[test]
fn a_head_that_never_ends_is_cut_off() {
    let s = setup("serve-head-deadline");
    let server = s.start(&["--head-timeout-secs", "1"]);
    let mut c = connect(&server.addr);
    let mut sent = 0;
    let head = b"GET /bundles/support.jws HTTP/1.1\r\nX-Slow: ";
    let cut_off = head.iter().chain(std::iter::repeat(&b'a')).take(200).any(|b| {
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
        c.write_all(&[*b]).is_err()
    });
    let mut rest = Vec::new();
    let closed = cut_off || c.read_to_end(&mut rest).is_ok();
    assert!(closed && sent < 200, "the server kept reading a head for {sent} bytes at 10 bytes/s");
}

/// A body that arrives too slowly gets 408 within the request deadline; the upload is not stored.
#[test]
fn a_slow_upload_body_times_out() {
    let s = setup("serve-body-deadline");
    let server = s.start(&["--request-timeout-secs", "1"]);
    let body = sign(&bundle(6), &s.key);
    let mut c = connect(&server.addr);
    let req = request(
        &server.addr,
        "PUT",
        "/bundles/support.jws",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        body.as_bytes(),
        false,
    );
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    c.write_all(&req[..head_end + 10]).unwrap(); // the head and 10 bytes, then nothing
    let r = read_reply(&mut c);
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"], "request_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(std::fs::read_to_string(s.dir.join("support.jws")).unwrap() != body);
}

/// Issue 19 item 12's sibling: the size is checked from Content-Length before a byte of the body is read.
#[test]
fn an_upload_over_the_limit_is_refused_from_its_headers() {
    let s = setup("serve-size");
    let server = s.start(&["--max-upload-bytes", "4096"]);
    let mut c = connect(&server.addr);
    let head = format!(
        "PUT /bundles/support.jws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1099511627776\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap(); // and never a body
    let r = read_reply(&mut c);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["message"], "the upload is 1099511627776 bytes; this endpoint accepts at most 4096");
    // Unauthenticated uploads are refused before the size matters.
    let mut c = connect(&server.addr);
    c.write_all(b"PUT /bundles/support.jws HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut c).status, 401);
}

/// Several requests on one connection; the connection limit answers one connection too many with 503 at once.
#[test]
fn keep_alive_and_the_connection_limit() {
    let s = setup("serve-connections");
    let server = s.start(&["--max-connections", "3"]);
    let addr = server.addr.as_str();
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut held {
        for _ in 0..2 {
            c.write_all(&request(addr, "GET", "/healthz", &[], b"", false)).unwrap();
            let r = read_reply(c);
            assert_eq!(r.status, 200);
        }
    }
    let r = http(addr, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "too_many_connections");
    assert_eq!(r.header("retry-after"), Some("1"));
    // One closes: its slot comes back.
    drop(held.pop());
    let mut answered = None;
    for _ in 0..100 {
        let r = http(addr, "GET", "/healthz", &[], b"");
        if r.status == 200 {
            answered = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = answered.expect("a slot is released when a connection closes");
    assert_eq!(r.json()["connections"], 3);
}

fn long_poll(addr: &str, etag: &str, wait: &str) -> std::thread::JoinHandle<Reply> {
    let (addr, etag, wait) = (addr.to_string(), etag.to_string(), wait.to_string());
    std::thread::spawn(move || {
        http(
            &addr,
            "GET",
            "/bundles/support.jws",
            &[("If-None-Match", &etag), ("Prefer", &format!("wait={wait}"))],
            b"",
        )
    })
}

/// Waits (bounded) until the server says `n` long polls are held.
fn until_waiting(addr: &str, n: u64) {
    for _ in 0..400 {
        if http(addr, "GET", "/healthz", &[], b"").json()["waiting"] == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the server never held {n} long polls");
}

/// Issue 16 item 3: a conditional GET with `Prefer: wait=N` is held until an upload publishes a new revision, and
/// the reply says the wait was honoured.
#[test]
fn a_long_poll_is_answered_by_the_next_upload() {
    let s = setup("serve-long-poll");
    let server = s.start(&[]);
    let addr = server.addr.as_str();
    let v5 = std::fs::read(s.dir.join("support.jws")).unwrap();
    let held = long_poll(addr, &etag_of(&v5), "30");
    until_waiting(addr, 1);
    let v6 = sign(&bundle(6), &s.key);
    assert_eq!(put(addr, "support", Some(TOKEN), v6.as_bytes()).status, 200);
    let r = held.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v6.as_bytes());
    assert_eq!(r.header("etag"), Some(etag_of(v6.as_bytes()).as_str()));
    assert_eq!(r.header("preference-applied"), Some("wait=30"));
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").json()["waiting"], 0);
}

/// The wait ends with 304 and `Preference-Applied`; it is capped; without `Prefer` (or with a stale ETag) the answer
/// comes at once; a client can tell this server from one that ignores the preference.
#[test]
fn long_poll_waits_end_and_are_capped() {
    let s = setup("serve-long-poll-end");
    let server = s.start(&["--max-wait-secs", "1"]);
    let addr = server.addr.as_str();
    let tag = etag_of(&std::fs::read(s.dir.join("support.jws")).unwrap());
    let r = long_poll(addr, &tag, "3600").join().unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(r.header("preference-applied"), Some("wait=1"), "capped to --max-wait-secs");
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    let r = http(addr, "GET", "/bundles/support.jws", &[("If-None-Match", &tag)], b"");
    assert_eq!((r.status, r.header("preference-applied")), (304, None));
    let r = long_poll(addr, "\"sha256-00\"", "30").join().unwrap();
    assert_eq!((r.status, r.header("preference-applied")), (200, Some("wait=1")));
}

/// Many waiting clients: up to --max-waiting are held, the rest are answered at once without the preference applied;
/// one upload answers every held one.
#[test]
fn many_long_polls_are_bounded_and_all_answered() {
    let s = setup("serve-long-poll-many");
    let server = s.start(&["--max-waiting", "40"]);
    let addr = server.addr.as_str();
    let tag = etag_of(&std::fs::read(s.dir.join("support.jws")).unwrap());
    let held: Vec<_> = (0..40).map(|_| long_poll(addr, &tag, "60")).collect();
    until_waiting(addr, 40);
    let extra: Vec<Reply> = (0..20).map(|_| long_poll(addr, &tag, "60")).map(|t| t.join().unwrap()).collect();
    for r in &extra {
        assert_eq!((r.status, r.header("preference-applied")), (304, None), "over --max-waiting: answered at once");
    }
    let v6 = sign(&bundle(6), &s.key);
    assert_eq!(put(addr, "support", Some(TOKEN), v6.as_bytes()).status, 200);
    for t in held {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, v6.as_bytes());
    }
}

/// A bundle copied into the directory by hand (atomic rename, as with nginx) also ends a long poll.
#[test]
fn a_long_poll_sees_a_file_copied_in_by_hand() {
    let s = setup("serve-long-poll-copy");
    let server = s.start(&[]);
    let addr = server.addr.as_str();
    let tag = etag_of(&std::fs::read(s.dir.join("support.jws")).unwrap());
    let held = long_poll(addr, &tag, "30");
    until_waiting(addr, 1);
    let v7 = sign(&bundle(7), &s.key);
    let tmp = s.dir.join(".support.jws.tmp");
    std::fs::write(&tmp, &v7).unwrap();
    std::fs::rename(&tmp, s.dir.join("support.jws")).unwrap();
    let r = held.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v7.as_bytes());
}

/// Upload tokens carry labels; the log names the label of the token used, for accepted and refused uploads.
#[test]
fn the_upload_log_names_the_tokens_label() {
    let s = setup("serve-labels");
    let other = "second-token-fedcba9876543210";
    let tokens = s.scratch.write("tokens", format!("# who may upload\nci-pipeline {TOKEN}\nbreak-glass {other}\n"));
    let server = start_with(&s.dir, &s.jwks, &tokens, &[]);
    let addr = server.addr.as_str();
    assert_eq!(put(addr, "support", Some(other), sign(&bundle(6), &s.key).as_bytes()).status, 200);
    assert_eq!(put(addr, "support", Some(TOKEN), sign(&bundle(6), &s.key).as_bytes()).status, 409);
    assert_eq!(put(addr, "support", Some("not-a-token-at-all-000"), b"x").status, 403);
    let log = server.log();
    assert!(log.contains("warden serve: upload tokens: ci-pipeline, break-glass"), "{log}");
    assert!(log.contains("upload by \"break-glass\" from 127.0.0.1:"), "{log}");
    assert!(log.contains(": support: revision 6 accepted"), "{log}");
    assert!(log.contains("upload by \"ci-pipeline\" from 127.0.0.1:") && log.contains("refused 409 rollback"), "{log}");
    assert!(log.contains(": support: refused: unknown upload token"), "{log}");

    let bad = s.scratch.write("bad-tokens", "ci-pipeline short\n");
    let o = warden([
        "serve",
        "--dir",
        s.dir.to_str().unwrap(),
        "--keys",
        s.jwks.to_str().unwrap(),
        "--authority",
        AUTHORITY,
        "--upload-token-file",
        bad.to_str().unwrap(),
    ]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("the upload token must be at least 16 characters"), "{}", stderr(&o));
}

/// HTTPS with --tls-cert/--tls-key (rustls): a client that trusts the certificate gets the bundle.
#[test]
fn serves_https_with_a_certificate() {
    let s = setup("serve-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = s.scratch.write("cert.pem", cert.cert.pem());
    let key_file = s.scratch.write("key.pem", cert.signing_key.serialize_pem());
    let server = s.start(&["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap()]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(&server.addr));
    tls.write_all(&request(&server.addr, "GET", "/bundles/support.jws", &[], b"", false)).unwrap();
    let r = read_reply(&mut tls);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, std::fs::read(s.dir.join("support.jws")).unwrap());

    // Plain HTTP to the TLS port is not served.
    let mut c = connect(&server.addr);
    c.write_all(&request(&server.addr, "GET", "/healthz", &[], b"", true)).unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&raw));
}
