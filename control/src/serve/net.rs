//! The network side of `warden serve`: the accept loop with its connection limit, optional TLS (rustls), and the
//! per-connection deadline that bounds how long one request may hold a connection.
//!
//! HTTP/1.1 itself is hyper's (`hyper::server::conn::http1`): request parsing, keep-alive, `Expect: 100-continue`,
//! head size limits and the head read timeout (a total for the whole head, not per read, which is what stops a
//! slowloris client trickling header bytes). What hyper leaves to the embedder is here: how many connections may be
//! open at once, and a total deadline per request for reading its body and writing its reply ([`Deadline`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// A connection's deadline, shared between the connection's IO and the request handler: the handler moves it when a
/// request starts (`now + request timeout + granted long-poll wait`); when it passes, every read and write on the
/// connection fails and hyper closes it.
#[derive(Clone)]
pub struct DeadlineHandle(Arc<Mutex<Instant>>);

impl DeadlineHandle {
    pub fn new(at: Instant) -> DeadlineHandle {
        DeadlineHandle(Arc::new(Mutex::new(at)))
    }

    /// Sets the deadline to `at` (later or earlier than before).
    pub fn set(&self, at: Instant) {
        if let Ok(mut d) = self.0.lock() {
            *d = at;
        }
    }

    fn get(&self) -> Instant {
        self.0.lock().map(|d| *d).unwrap_or_else(|_| Instant::now())
    }
}

/// An IO stream that fails with `TimedOut` once its [`DeadlineHandle`] passes, also while nothing is read or
/// written (its timer wakes the connection task).
pub struct Deadline<S> {
    inner: S,
    handle: DeadlineHandle,
    timer: Pin<Box<Sleep>>,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, handle: DeadlineHandle) -> Deadline<S> {
        let at = handle.get();
        Deadline { inner, handle, timer: Box::pin(tokio::time::sleep_until(at)) }
    }

    /// `Err(TimedOut)` when the deadline has passed; else arms the timer for the current deadline.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let at = self.handle.get();
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Loads a PEM certificate chain and private key into a TLS acceptor (TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("--tls-cert {}: no CERTIFICATE in the PEM file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow!("--tls-key {}: {e}", key.display()))?;
    // ring rather than aws-lc-rs: no C/CMake build step on a fresh machine. Its provider lacks the post-quantum key
    // exchange, which a bundle fetch (signed, public-by-design content) does not need.
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Counts open connections; a slot is released when its guard drops.
pub struct Slots {
    open: AtomicUsize,
    max: usize,
}

pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { open: AtomicUsize::new(0), max })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn take(self: &Arc<Slots>) -> Option<Slot> {
        let mut n = self.open.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(now) => n = now,
            }
        }
    }
}

/// What the accept loop needs to know.
pub struct Listen {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub slots: Arc<Slots>,
    /// Time allowed for the TLS handshake and each request head (and the idle time between keep-alive requests).
    pub head_timeout: Duration,
}

/// The reply to a connection over the limit: sent at once, then the connection is closed.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 102\r\n\r\n\
{\"error\": \"too_many_connections\", \"message\": \"this endpoint is at its connection limit; retry later\"}\n";

/// Accepts connections forever; each one gets a task running `serve(io, peer, deadline)`.
pub async fn accept_loop<F, Fut>(listen: Listen, serve: F)
where
    F: Fn(Deadline<TcpStream>, Option<TlsAcceptor>, String, DeadlineHandle) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = match listen.listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warden serve: accept: {e}");
                // Out of file descriptors and alike: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.to_string();
        let Some(slot) = listen.slots.take() else {
            eprintln!("warden serve: {peer} refused: {} connections open (--max-connections)", listen.slots.max);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVER_LIMIT)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let handle = DeadlineHandle::new(Instant::now() + listen.head_timeout);
        let io = Deadline::new(stream, handle.clone());
        let serve = serve.clone();
        let tls = listen.tls.clone();
        tokio::spawn(async move {
            serve(io, tls, peer, handle).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_limit_reply_has_the_right_length() {
        let text = std::str::from_utf8(OVER_LIMIT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too_many_connections");
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none());
        assert_eq!(slots.open(), 2);
        drop(a);
        assert!(slots.take().is_some());
    }
}
