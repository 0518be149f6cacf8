//! Polling the control endpoint, without the host: the fleet-wide fetch lease, the schedule (period, jitter,
//! exponential backoff), the classification of a fetch's result, and the shared-data record through which one VM's
//! verified bundle reaches the others.
//!
//! Every worker VM ticks every [`TICK_MS`]. On each tick a VM first looks at the shared bundle record (and adopts a
//! newer bundle after verifying and compiling it itself), then at the lease ([`Lease`], shared data
//! `warden.fetch_lease|…`): the lease says when the next fetch is due and whether a VM is fetching now. The first VM
//! whose tick finds a due, free lease takes it with a compare-and-swap and dispatches the fetch; the others see it
//! held and wait. When the fetch ends the holder releases the lease with the next due time: success schedules
//! `poll_seconds` minus jitter later, failure doubles the delay per consecutive failure up to
//! `backoff_max_seconds`. So a fleet of N workers fetches about once per period, not N times.
//!
//! Long polling (`control.long_poll_wait_seconds`): the fetch is a conditional GET with `Prefer: wait=N`, which the
//! endpoint may hold until a new revision is published or N seconds pass, answering with `Preference-Applied:
//! wait=N` ([`preference_applied_wait`]). The call's timeout, and with it the lease's claim, is the wait plus
//! `timeout_ms` ([`Schedule::timeout_ms`] is the call's timeout), so the lease outlives the held call. [`pace`] says
//! when the next fetch is due: at once after a held answer (304 at the end of the wait, or a new revision), on the
//! schedule after an answer the endpoint did not hold (nginx ignores `Prefer`: plain polls every `poll_seconds`),
//! and with backoff after a failure.
//!
//! Waking the other VMs: a VM that activated a fetched bundle writes it to shared data, then enqueues a wake-up on
//! the shared queue of every other VM of the proxy (each VM registers `warden.wake|<source>|<holder id>` and lists
//! its holder id in the [`Wakers`] registry), so they adopt it at once instead of on their next tick; the tick stays
//! as the fallback.

use std::fmt;

use crate::activation::{Digest, RejectCause};

/// Tick period of every root context.
pub const TICK_MS: u64 = 1000;
/// How long a lease outlives its fetch's timeout before another VM may take over (a holder that vanished).
pub const LEASE_SLACK_MS: u64 = 2000;
/// Largest bundle body accepted from the control endpoint.
pub const MAX_BUNDLE_BYTES: usize = 8 << 20;

/// Why a fetch did not produce a new or unchanged bundle. Each has its counter
/// `warden.bundle.fetch.failure.<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The endpoint answered with a status other than 200 or 304.
    HttpStatus,
    /// No connection (Envoy's 503 `upstream connect error …` / `no healthy upstream`, or an unknown cluster).
    Connect,
    /// No answer within `timeout_ms` (Envoy's 504 `upstream request timeout`).
    Timeout,
    /// The connection was reset or the response was cut short (no headers delivered).
    Reset,
    /// The body came, but it is not a bundle that may be activated (the activation's own causes).
    Rejected(RejectCause),
}

impl Cause {
    pub const ALL: [Cause; 11] = [
        Cause::HttpStatus,
        Cause::Connect,
        Cause::Timeout,
        Cause::Reset,
        Cause::Rejected(RejectCause::Signature),
        Cause::Rejected(RejectCause::Rollback),
        Cause::Rejected(RejectCause::Expired),
        Cause::Rejected(RejectCause::Invalid),
        Cause::Rejected(RejectCause::UnknownKey),
        Cause::Rejected(RejectCause::Malformed),
        Cause::Rejected(RejectCause::RevisionJump),
    ];

    pub fn code(self) -> &'static str {
        match self {
            Cause::HttpStatus => "http_status",
            Cause::Connect => "connect",
            Cause::Timeout => "timeout",
            Cause::Reset => "reset",
            Cause::Rejected(c) => c.code(),
        }
    }

    pub fn from_code(code: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Index into [`Cause::ALL`] (metric id tables).
    pub fn index(self) -> usize {
        Cause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

impl From<RejectCause> for Cause {
    fn from(c: RejectCause) -> Cause {
        Cause::Rejected(c)
    }
}

impl From<crate::activation::Rejected> for Failure {
    fn from(r: crate::activation::Rejected) -> Failure {
        Failure { cause: r.cause.into(), detail: r.detail }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failed fetch: the cause and a one-line explanation for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub detail: String,
}

impl Failure {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Failure {
        Failure { cause, detail: detail.into() }
    }
}

/// What an http-call response amounts to, before the body is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the active bundle is current.
    NotModified,
    /// 200 with a body to verify, and the response's ETag.
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
    Failed(Failure),
}

/// Bytes read of a non-200 body (for the log line and Envoy's failure shapes).
pub const SNIPPET_BYTES: usize = 1024;

/// How many bytes of an http-call response body to read, decided before reading any: the host announces the
/// body's size on the callback (`body_size`). A 200 whose body (or `content-length`) is over [`MAX_BUNDLE_BYTES`],
/// or whose `content-length` disagrees with the bytes that arrived, is refused unread, so a control endpoint cannot
/// make the VM copy an arbitrary body into its memory (which never shrinks; past 2^31 bytes the copy traps the VM).
/// Other statuses: at most [`SNIPPET_BYTES`].
pub fn body_to_read(headers: Option<&[(String, Vec<u8>)]>, body_size: usize) -> Result<usize, Failure> {
    let Some(headers) = headers else { return Ok(0) };
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice());
    let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::trim).and_then(|v| v.parse::<u64>().ok());
    if header(":status").and_then(text) != Some(200) {
        return Ok(body_size.min(SNIPPET_BYTES));
    }
    let length = header("content-length").map(text);
    let said = match length {
        Some(Some(n)) => format!("content-length {n}"),
        Some(None) => "an unreadable content-length".to_string(),
        None => "no content-length".to_string(),
    };
    let limit = MAX_BUNDLE_BYTES as u64;
    let size = body_size as u64;
    if size > limit || matches!(length, Some(Some(n)) if n > limit) {
        return Err(Failure::new(
            Cause::Rejected(RejectCause::Malformed),
            format!(
                "the response body is {size} bytes ({said}), over the {limit}-byte limit on a signed bundle: not read (is the control path serving the right file?)"
            ),
        ));
    }
    match length {
        Some(Some(n)) if n == size => Ok(body_size),
        None => Ok(body_size),
        _ => Err(Failure::new(
            Cause::Rejected(RejectCause::Malformed),
            format!("the response says {said} but {size} bytes arrived: not read"),
        )),
    }
}

/// Envoy's body for a refused connection (and the prefix of other connection failures).
const CONNECT_FAILURE_PREFIX: &[u8] = b"upstream connect error";
const NO_HEALTHY_UPSTREAM: &[u8] = b"no healthy upstream";
const UPSTREAM_TIMEOUT: &[u8] = b"upstream request timeout";

/// Classifies a response. `headers` is `None` when the call delivered no headers (Envoy's reset shape
/// `(0, 0, 0)`: the headers must then not be read, the SDK would trap).
pub fn classify(headers: Option<&[(String, Vec<u8>)]>, body: Option<&[u8]>) -> Fetched {
    let Some(headers) = headers else {
        return Fetched::Failed(Failure::new(Cause::Reset, "connection reset or response cut short"));
    };
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice());
    let status = header(":status").and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse::<u16>().ok());
    let body = body.unwrap_or_default();
    let Some(status) = status else {
        return Fetched::Failed(Failure::new(Cause::Reset, "response without a status"));
    };
    match status {
        200 => {
            let etag = header("etag")
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_graphic() || c == b' '))
                .map(str::to_string);
            if body.len() > MAX_BUNDLE_BYTES {
                Fetched::Failed(Failure::new(
                    Cause::Rejected(RejectCause::Malformed),
                    format!("body of {} bytes is larger than {MAX_BUNDLE_BYTES}", body.len()),
                ))
            } else if body.iter().all(u8::is_ascii_whitespace) {
                Fetched::Failed(Failure::new(Cause::Rejected(RejectCause::Malformed), "200 with an empty body"))
            } else {
                Fetched::Body { bytes: body.to_vec(), etag }
            }
        }
        304 => Fetched::NotModified,
        503 if body.starts_with(CONNECT_FAILURE_PREFIX) || body.starts_with(NO_HEALTHY_UPSTREAM) => {
            Fetched::Failed(Failure::new(Cause::Connect, format!("503 {}", snippet(body))))
        }
        504 if body.starts_with(UPSTREAM_TIMEOUT) => {
            Fetched::Failed(Failure::new(Cause::Timeout, "no response within the timeout"))
        }
        other => Fetched::Failed(Failure::new(Cause::HttpStatus, format!("status {other}: {}", snippet(body)))),
    }
}

/// The start of a body, printable, for a log line.
pub fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(120)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 120 {
        format!("{}…", text.trim())
    } else {
        text.trim().to_string()
    }
}

/// The wait the endpoint granted a long poll: `Preference-Applied: wait=N` (RFC 7240 section 3), among other
/// preferences, in any of the header's values. `None` when the endpoint did not say it applied one (a server that
/// ignores `Prefer`, such as nginx, answers at once without it).
pub fn preference_applied_wait(headers: Option<&[(String, Vec<u8>)]>) -> Option<u64> {
    let headers = headers?;
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("preference-applied"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            let (name, value) = pref.split_once('=')?;
            let value = value.split(';').next()?.trim().trim_matches('"');
            name.trim().eq_ignore_ascii_case("wait").then(|| value.parse::<u64>().ok()).flatten()
        })
}

/// How a fetch ended, for [`pace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A newer revision was activated.
    Newer,
    /// 304, or the active bundle again.
    Current,
    /// A failure (backoff).
    Failed,
}

/// When the fetch after this one is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// On the schedule: `poll_seconds` (with jitter) after a success, backoff after a failure.
    Schedule,
    /// At once: the next long poll starts as soon as this one ended.
    AtOnce,
}

/// The pace after a fetch: `long_poll` says the fetch asked for a wait, `applied` is the endpoint's
/// [`preference_applied_wait`], `held_ms` how long the call took. After a held long poll the next one starts at
/// once, so the endpoint always holds one of this proxy's requests and answers it when a revision is published: a
/// new revision (the next poll carries its ETag), or a 304 held for at least one tick or half the wait applied
/// (whichever is less). A 304 or an unchanged 200 answered sooner, or any answer without `Preference-Applied`,
/// goes by the schedule, so an endpoint that does not hold requests is polled every `poll_seconds`, never in a
/// loop; a failure backs off as ever.
pub fn pace(long_poll: bool, applied: Option<u64>, answer: Answer, held_ms: u64) -> Pace {
    let Some(wait) = applied.filter(|_| long_poll) else { return Pace::Schedule };
    match answer {
        Answer::Failed => Pace::Schedule,
        Answer::Newer => Pace::AtOnce,
        Answer::Current if held_ms >= (wait.saturating_mul(1000) / 2).min(TICK_MS) => Pace::AtOnce,
        Answer::Current => Pace::Schedule,
    }
}

/// The schedule's parameters, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub period_ms: u64,
    pub jitter_percent: u64,
    /// The timeout of one dispatched fetch: `timeout_ms`, plus the wait of a long poll
    /// ([`crate::config::Control::call_timeout_ms`]). A lease's claim runs this long plus [`LEASE_SLACK_MS`].
    pub timeout_ms: u64,
    pub backoff_max_ms: u64,
}

impl Schedule {
    /// Delay until the next fetch after a success. Jitter takes up to `jitter_percent` off the period (so fetches
    /// of many gateways spread out, and never come later than one period), and one tick is taken off for the other
    /// VMs to pick the result up from shared data: a revision served at time t is active on every VM by
    /// t + `poll_seconds` (for periods of 2 s and more). `r` is a random number.
    pub fn after_success(&self, r: u64) -> u64 {
        spread(self.period_ms, self.jitter_percent, r)
    }

    /// Delay until the next fetch after `failures` consecutive failures (≥ 1): the period doubled per failure
    /// after the first, at most `backoff_max`, with the same jitter.
    pub fn after_failure(&self, failures: u32, r: u64) -> u64 {
        let doublings = failures.saturating_sub(1).min(20);
        let delay = self.period_ms.saturating_mul(1u64 << doublings).min(self.backoff_max_ms.max(self.period_ms));
        spread(delay, self.jitter_percent, r)
    }
}

fn spread(delay_ms: u64, jitter_percent: u64, r: u64) -> u64 {
    let range = delay_ms.saturating_mul(jitter_percent) / 100;
    let jittered = delay_ms - r % range.saturating_add(1);
    jittered.saturating_sub(TICK_MS).max(TICK_MS)
}

/// The fleet-wide fetch lease (shared data). Text: `v1 <holder> <until_ms> <next_due_ms> <failures> <last>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// VM that holds the lease (fetching now); 0 when free.
    pub holder: u64,
    /// Until when the holder's claim stands (ms since the epoch).
    pub until_ms: u64,
    /// When the next fetch is due (ms since the epoch).
    pub next_due_ms: u64,
    /// Consecutive failed fetches (backoff).
    pub failures: u32,
    /// How the last fetch ended: `ok` or a [`Cause`] code (logging once per change).
    pub last: String,
}

impl Lease {
    /// A free lease due at `now_ms` (the first fetch).
    pub fn initial(now_ms: u64) -> Lease {
        Lease { holder: 0, until_ms: 0, next_due_ms: now_ms, failures: 0, last: "ok".to_string() }
    }

    pub fn encode(&self) -> String {
        format!("v1 {} {} {} {} {}", self.holder, self.until_ms, self.next_due_ms, self.failures, self.last)
    }

    /// `None` for anything that is not a lease this version wrote.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split(' ');
        if it.next()? != "v1" {
            return None;
        }
        let lease = Lease {
            holder: it.next()?.parse().ok()?,
            until_ms: it.next()?.parse().ok()?,
            next_due_ms: it.next()?.parse().ok()?,
            failures: it.next()?.parse().ok()?,
            last: it.next()?.to_string(),
        };
        it.next().is_none().then_some(lease)
    }
}

/// What a VM does with the lease on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Nothing: not due, or another VM is fetching.
    Wait,
    /// Write this lease with the CAS value read (0 when the key was missing); on success, fetch.
    Take(Lease),
}

impl Schedule {
    /// The furthest ahead of now a lease can say the next fetch is due: the longest delay (the backoff cap or the
    /// period) and a tick. A due time further ahead was written before the wall clock stepped back.
    pub fn max_ahead_ms(&self) -> u64 {
        self.backoff_max_ms.max(self.period_ms).saturating_add(TICK_MS)
    }

    /// The longest a holder's claim can run from now: the fetch's timeout and the slack.
    pub fn max_claim_ms(&self) -> u64 {
        self.timeout_ms.saturating_add(LEASE_SLACK_MS)
    }
}

/// The tick's decision over the lease as read from shared data (`None`: missing or unreadable).
///
/// The lease holds wall-clock times, which step (NTP, an operator's `date`). A step forward makes the fetch due at
/// once, and the next due time is counted from the new time. A step back would leave a due time (or a claim)
/// hours in the future and freeze polling for as long: a due time further ahead than [`Schedule::max_ahead_ms`],
/// or a claim further ahead than [`Schedule::max_claim_ms`], is stale and counts as due (free) now.
pub fn on_tick(current: Option<&Lease>, me: u64, now_ms: u64, schedule: &Schedule) -> LeaseStep {
    let base = match current {
        None => Lease::initial(now_ms),
        Some(l) => {
            let claim_plausible = l.until_ms <= now_ms.saturating_add(schedule.max_claim_ms());
            let held = l.holder != 0 && l.until_ms > now_ms && claim_plausible;
            let due_plausible = l.next_due_ms <= now_ms.saturating_add(schedule.max_ahead_ms());
            if held || (now_ms < l.next_due_ms && due_plausible) {
                return LeaseStep::Wait;
            }
            l.clone()
        }
    };
    let until_ms = now_ms.saturating_add(schedule.timeout_ms).saturating_add(LEASE_SLACK_MS);
    LeaseStep::Take(Lease { holder: me, until_ms, ..base })
}

/// The lease to write when `me`'s fetch (started at `started_ms`) ended at `now_ms` with `result` (`Ok` with the
/// [`Pace`] of the next fetch, or a failure cause). `None` when `me` no longer holds it (it expired and another VM
/// took over: leave theirs alone).
pub fn on_done(
    current: Option<&Lease>,
    me: u64,
    started_ms: u64,
    now_ms: u64,
    result: Result<Pace, Cause>,
    schedule: &Schedule,
    r: u64,
) -> Option<Lease> {
    let l = current?;
    if l.holder != me {
        return None;
    }
    let (failures, delay, last) = match result {
        Ok(Pace::AtOnce) => {
            return Some(Lease { holder: 0, until_ms: 0, next_due_ms: now_ms, failures: 0, last: "ok".to_string() })
        }
        Ok(Pace::Schedule) => (0, schedule.after_success(r), "ok".to_string()),
        Err(cause) => {
            let failures = l.failures.saturating_add(1);
            (failures, schedule.after_failure(failures, r), cause.code().to_string())
        }
    };
    // A fetch that "started" after it ended saw the wall clock step back: count from the end.
    let next_due_ms = started_ms.min(now_ms).saturating_add(delay).max(now_ms.saturating_add(TICK_MS.min(delay)));
    Some(Lease { holder: 0, until_ms: 0, next_due_ms, failures, last })
}

/// The bundle record in shared data: a one-line JSON header, a newline, then the signed bundle exactly as fetched.
/// Other VMs use the header only to decide whether to look closer; they verify the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordHeader {
    pub revision: u64,
    /// The SHA-256 (hex) of the payload.
    pub digest: Digest,
    pub etag: Option<String>,
}

pub fn encode_record(header: &RecordHeader, signed: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(signed);
    out
}

pub fn decode_record(bytes: &[u8]) -> Option<(RecordHeader, &[u8])> {
    let split = bytes.iter().position(|b| *b == b'\n')?;
    let header: RecordHeader = serde_json::from_slice(&bytes[..split]).ok()?;
    Some((header, &bytes[split + 1..]))
}

/// Shared-data keys for one control source: VMs of plugins that poll the same endpoint share them.
pub fn keys(cluster: &str, authority: &str, path: &str) -> (String, String) {
    let source = format!("{cluster}|{authority}{path}");
    (format!("warden.bundle|{source}"), format!("warden.fetch_lease|{source}"))
}

/// Most VMs the wake-up registry lists (Envoy's workers and its main-thread VM; the oldest entries go first).
pub const MAX_WAKERS: usize = 256;

/// Shared-data key of the wake-up registry of one control source.
pub fn wakers_key(cluster: &str, authority: &str, path: &str) -> String {
    format!("warden.wakers|{cluster}|{authority}{path}")
}

/// The shared queue on which the VM with lease holder id `me` is woken when another VM publishes a bundle.
pub fn wake_queue(cluster: &str, authority: &str, path: &str, me: u64) -> String {
    format!("warden.wake|{cluster}|{authority}{path}|{me:016x}")
}

/// The wake-up registry (shared data): the holder ids of the VMs that registered a wake-up queue, oldest first.
/// Text: `v1 <id hex> <id hex> …`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wakers(pub Vec<u64>);

impl Wakers {
    pub fn encode(&self) -> String {
        let mut out = String::from("v1");
        for id in &self.0 {
            out.push_str(&format!(" {id:016x}"));
        }
        out
    }

    /// `None` for anything that is not a registry this version wrote.
    pub fn decode(bytes: &[u8]) -> Option<Wakers> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut it = text.split(' ');
        if it.next()? != "v1" {
            return None;
        }
        it.map(|id| u64::from_str_radix(id, 16).ok()).collect::<Option<Vec<u64>>>().map(Wakers)
    }

    /// The registry with `me` in it (at the end, at most [`MAX_WAKERS`] entries, the oldest dropped); `None` when
    /// `me` is already listed (nothing to write). An unreadable registry is started afresh.
    pub fn with(current: Option<&Wakers>, me: u64) -> Option<Wakers> {
        let mut ids = current.map(|w| w.0.clone()).unwrap_or_default();
        if ids.contains(&me) {
            return None;
        }
        ids.push(me);
        let extra = ids.len().saturating_sub(MAX_WAKERS);
        ids.drain(..extra);
        Some(Wakers(ids))
    }

    /// The VMs to wake: every listed id but `me`.
    pub fn others(&self, me: u64) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied().filter(move |id| *id != me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    fn failed(f: Fetched) -> Cause {
        match f {
            Fetched::Failed(f) => f.cause,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn classification() {
        let ok = classify(Some(&hdrs(&[(":status", "200"), ("ETag", "\"abc\"")])), Some(b"a.b.c"));
        assert_eq!(ok, Fetched::Body { bytes: b"a.b.c".to_vec(), etag: Some("\"abc\"".to_string()) });
        let no_etag = classify(Some(&hdrs(&[(":status", "200")])), Some(b"a.b.c"));
        assert_eq!(no_etag, Fetched::Body { bytes: b"a.b.c".to_vec(), etag: None });
        assert_eq!(classify(Some(&hdrs(&[(":status", "304"), ("etag", "\"abc\"")])), None), Fetched::NotModified);
        assert_eq!(failed(classify(None, None)), Cause::Reset);
        assert_eq!(failed(classify(Some(&hdrs(&[("x", "y")])), None)), Cause::Reset);
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "2xx")])), None)), Cause::Reset);
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "200")])), None)), Cause::Rejected(RejectCause::Malformed));
        assert_eq!(
            failed(classify(Some(&hdrs(&[(":status", "200")])), Some(b" \n"))),
            Cause::Rejected(RejectCause::Malformed)
        );
        let huge = vec![b'a'; MAX_BUNDLE_BYTES + 1];
        assert_eq!(
            failed(classify(Some(&hdrs(&[(":status", "200")])), Some(&huge))),
            Cause::Rejected(RejectCause::Malformed)
        );
        let refused = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure";
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "503")])), Some(refused))), Cause::Connect);
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "503")])), Some(b"no healthy upstream"))), Cause::Connect);
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "503")])), Some(b"maintenance"))), Cause::HttpStatus);
        assert_eq!(
            failed(classify(Some(&hdrs(&[(":status", "504")])), Some(b"upstream request timeout"))),
            Cause::Timeout
        );
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "504")])), Some(b"gateway"))), Cause::HttpStatus);
        match classify(Some(&hdrs(&[(":status", "500")])), Some(b"boom\n\x01")) {
            Fetched::Failed(f) => assert_eq!(f, Failure::new(Cause::HttpStatus, "status 500: boom")),
            other => panic!("{other:?}"),
        }
        assert_eq!(failed(classify(Some(&hdrs(&[(":status", "404")])), None)), Cause::HttpStatus);
    }

    #[test]
    fn cause_codes_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_code(c.code()), Some(c));
            assert_eq!(Cause::ALL[c.index()], c);
        }
        assert_eq!(Cause::from_code("ok"), None);
    }

    fn schedule() -> Schedule {
        Schedule { period_ms: 10_000, jitter_percent: 10, timeout_ms: 5000, backoff_max_ms: 60_000 }
    }

    #[test]
    fn success_delay_is_within_one_period_minus_a_tick() {
        let s = schedule();
        let mut seen = std::collections::HashSet::new();
        for r in 0..5000u64 {
            let d = s.after_success(r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!((8000..=9000).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 500, "jitter spreads the delay");
        let flat = Schedule { jitter_percent: 0, ..s };
        assert_eq!(flat.after_success(12345), 9000);
        let one = Schedule { period_ms: 1000, jitter_percent: 50, ..s };
        assert_eq!(one.after_success(7), TICK_MS, "never below one tick");
    }

    #[test]
    fn failure_backoff_doubles_up_to_the_max() {
        let s = Schedule { jitter_percent: 0, ..schedule() };
        let delays: Vec<u64> = (1..=6).map(|n| s.after_failure(n, 0)).collect();
        assert_eq!(delays, vec![9000, 19_000, 39_000, 59_000, 59_000, 59_000]);
        assert_eq!(s.after_failure(u32::MAX, 0), 59_000);
        let j = schedule();
        for r in 0..1000 {
            let d = j.after_failure(3, r * 7919);
            assert!((35_000..=39_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn lease_text_round_trips() {
        let l = Lease { holder: 42, until_ms: 7, next_due_ms: 9, failures: 3, last: "timeout".to_string() };
        assert_eq!(l.encode(), "v1 42 7 9 3 timeout");
        assert_eq!(Lease::decode(l.encode().as_bytes()), Some(l));
        for bad in ["", "v2 1 2 3 4 ok", "v1 1 2 3 ok", "v1 1 2 3 4 ok extra", "v1 x 2 3 4 ok", "\u{ff}"] {
            assert_eq!(Lease::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    /// A fleet of VMs over one lease on a fake clock: at most one fetch in flight, about one fetch per period.
    #[test]
    fn one_vm_fetches_per_period() {
        let s = schedule();
        let mut shared: Option<Lease> = Some(Lease::initial(0));
        let mut fetches: Vec<(u64, u64)> = Vec::new(); // (time, vm)
        let mut in_flight: Option<(u64, u64)> = None; // (vm, started)
        let mut r = 1u64;
        for now in (1000..=600_000).step_by(1000) {
            // A fetch takes 300 ms: it completes before the next tick.
            if let Some((vm, started)) = in_flight.take() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
                shared = on_done(shared.as_ref(), vm, started, started + 300, Ok(Pace::Schedule), &s, r >> 11);
                assert!(shared.is_some());
            }
            for vm in 1..=4u64 {
                if let LeaseStep::Take(l) = on_tick(shared.as_ref(), vm, now, &s) {
                    assert!(in_flight.is_none(), "two fetches at once");
                    shared = Some(l);
                    in_flight = Some((vm, now));
                    fetches.push((now, vm));
                }
            }
        }
        assert_eq!(fetches[0], (1000, 1), "the first tick fetches");
        for pair in fetches.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!((8000..=9000).contains(&gap), "gap {gap}");
        }
        assert!((60..=75).contains(&fetches.len()), "{}", fetches.len());
    }

    #[test]
    fn a_held_lease_is_respected_until_it_expires() {
        let s = schedule();
        let held = Lease { holder: 1, until_ms: 10_000, next_due_ms: 0, failures: 0, last: "ok".into() };
        assert_eq!(on_tick(Some(&held), 2, 9_999, &s), LeaseStep::Wait);
        assert_eq!(on_tick(Some(&held), 1, 9_999, &s), LeaseStep::Wait, "not even the holder fetches twice");
        match on_tick(Some(&held), 2, 10_000, &s) {
            LeaseStep::Take(l) => assert_eq!((l.holder, l.until_ms), (2, 10_000 + 5000 + LEASE_SLACK_MS)),
            LeaseStep::Wait => panic!("an expired lease is taken over"),
        }
        // The first holder's late completion does not overwrite the new holder's lease.
        let taken = Lease { holder: 2, until_ms: 17_000, ..held.clone() };
        assert_eq!(on_done(Some(&taken), 1, 3000, 11_000, Ok(Pace::Schedule), &s, 0), None);
        assert_eq!(on_done(None, 1, 3000, 11_000, Ok(Pace::Schedule), &s, 0), None);
        // Missing lease: take it (the key is created).
        assert!(matches!(on_tick(None, 3, 5, &s), LeaseStep::Take(Lease { holder: 3, next_due_ms: 5, .. })));
        // Not yet due.
        let free = Lease { holder: 0, until_ms: 0, next_due_ms: 20_000, failures: 0, last: "ok".into() };
        assert_eq!(on_tick(Some(&free), 3, 19_999, &s), LeaseStep::Wait);
        assert!(matches!(on_tick(Some(&free), 3, 20_000, &s), LeaseStep::Take(_)));
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let s = Schedule { jitter_percent: 0, ..schedule() };
        let mut lease = Lease::initial(0);
        let mut now = 0;
        let mut gaps = Vec::new();
        for attempt in 0..6 {
            let LeaseStep::Take(l) = on_tick(Some(&lease), 7, now, &s) else { panic!("due") };
            let result = if attempt < 5 { Err(Cause::Connect) } else { Ok(Pace::Schedule) };
            lease = on_done(Some(&l), 7, now, now + 100, result, &s, 0).unwrap();
            assert_eq!(lease.holder, 0);
            gaps.push(lease.next_due_ms - now);
            now = lease.next_due_ms;
        }
        assert_eq!(gaps, vec![9000, 19_000, 39_000, 59_000, 59_000, 9000]);
        assert_eq!((lease.failures, lease.last.as_str()), (0, "ok"));
        // A fetch that outlasts its delay is followed by the next one a tick later, not at once.
        let LeaseStep::Take(l) = on_tick(Some(&lease), 7, now, &s) else { panic!("due") };
        let slow = on_done(Some(&l), 7, now, now + 30_000, Err(Cause::Timeout), &s, 0).unwrap();
        assert_eq!(slow.next_due_ms, now + 30_000 + TICK_MS);
        assert_eq!((slow.failures, slow.last.as_str()), (1, "timeout"));
    }

    #[test]
    fn records_round_trip() {
        let h = RecordHeader { revision: 9, digest: Digest::from_sha256_hex("ab".into()), etag: Some("\"x\"".into()) };
        let bytes = encode_record(&h, b"a.b.c\n");
        assert!(bytes.starts_with(b"{\"revision\":9,\"digest\":\"ab\",\"etag\":\"\\\"x\\\"\"}\n"));
        let (back, signed) = decode_record(&bytes).unwrap();
        assert_eq!((back, signed), (h, &b"a.b.c\n"[..]));
        assert_eq!(decode_record(b"garbage"), None);
        assert_eq!(decode_record(b"{}\na.b.c"), None);
        assert_eq!(
            keys("control", "ctl.internal", "/b.jws"),
            ("warden.bundle|control|ctl.internal/b.jws".into(), "warden.fetch_lease|control|ctl.internal/b.jws".into())
        );
    }

    #[test]
    fn a_body_is_admitted_from_its_size_before_it_is_read() {
        let h = |pairs: &[(&str, &str)]| hdrs(pairs);
        let big = MAX_BUNDLE_BYTES + 1;
        assert_eq!(body_to_read(Some(&h(&[(":status", "200"), ("content-length", "5")])), 5), Ok(5));
        assert_eq!(body_to_read(Some(&h(&[(":status", "200")])), MAX_BUNDLE_BYTES), Ok(MAX_BUNDLE_BYTES));
        assert_eq!(body_to_read(Some(&h(&[(":status", "500")])), big), Ok(SNIPPET_BYTES));
        assert_eq!(body_to_read(None, 0), Ok(0));
        let refused = |headers: Vec<(String, Vec<u8>)>, size: usize| match body_to_read(Some(&headers), size) {
            Err(f) => (f.cause, f.detail),
            Ok(n) => panic!("read {n}"),
        };
        let (cause, detail) = refused(h(&[(":status", "200")]), big);
        assert_eq!(cause, Cause::Rejected(RejectCause::Malformed));
        assert_eq!(
            detail,
            format!(
                "the response body is {big} bytes (no content-length), over the {MAX_BUNDLE_BYTES}-byte limit on a \
                 signed bundle: not read (is the control path serving the right file?)"
            )
        );
        let (_, detail) = refused(h(&[(":status", "200"), ("content-length", "99999999999")]), 10);
        assert!(detail.contains("content-length 99999999999") && detail.contains("not read"), "{detail}");
        let (_, detail) = refused(h(&[(":status", "200"), ("content-length", "10")]), 11);
        assert_eq!(detail, "the response says content-length 10 but 11 bytes arrived: not read");
        let (_, detail) = refused(h(&[(":status", "200"), ("content-length", "x")]), 11);
        assert!(detail.contains("an unreadable content-length"), "{detail}");
    }

    #[test]
    fn a_lease_from_before_a_clock_step_back_is_stale() {
        let s = schedule();
        let day = 86_400_000;
        let now = 10 * day;
        // Due a day ahead (written before the clock stepped back a day): due now.
        let ahead = Lease { holder: 0, until_ms: 0, next_due_ms: now + day, failures: 0, last: "ok".into() };
        assert!(matches!(on_tick(Some(&ahead), 3, now, &s), LeaseStep::Take(_)));
        // Due within the longest delay: waits.
        let soon = Lease { next_due_ms: now + s.max_ahead_ms(), ..ahead.clone() };
        assert_eq!(on_tick(Some(&soon), 3, now, &s), LeaseStep::Wait);
        // A claim running a day ahead: stale, taken over; one within the timeout and slack: respected.
        let claimed = Lease { holder: 9, until_ms: now + day, next_due_ms: now, ..ahead.clone() };
        assert!(matches!(on_tick(Some(&claimed), 3, now, &s), LeaseStep::Take(Lease { holder: 3, .. })));
        let fresh = Lease { until_ms: now + s.max_claim_ms(), ..claimed };
        assert_eq!(on_tick(Some(&fresh), 3, now, &s), LeaseStep::Wait);
        // A fetch that "ended before it started" (stepped back meanwhile) schedules from its end.
        let mine = Lease { holder: 3, until_ms: now + 7000, next_due_ms: now, failures: 0, last: "ok".into() };
        let done = on_done(Some(&mine), 3, now + day, now, Ok(Pace::Schedule), &Schedule { jitter_percent: 0, ..s }, 0)
            .unwrap();
        assert_eq!(done.next_due_ms, now + 9000);
    }

    #[test]
    fn the_wait_an_endpoint_applied() {
        let h = |pairs: &[(&str, &str)]| hdrs(pairs);
        assert_eq!(
            preference_applied_wait(Some(&h(&[(":status", "304"), ("Preference-Applied", "wait=30")]))),
            Some(30)
        );
        assert_eq!(preference_applied_wait(Some(&h(&[("preference-applied", "respond-async, wait=5")]))), Some(5));
        assert_eq!(
            preference_applied_wait(Some(&h(&[
                ("preference-applied", "return=minimal"),
                ("preference-applied", " WAIT = 7 ")
            ]))),
            Some(7)
        );
        assert_eq!(preference_applied_wait(Some(&h(&[("preference-applied", "wait=\"9\"")]))), Some(9));
        assert_eq!(preference_applied_wait(Some(&h(&[(":status", "304"), ("etag", "\"x\"")]))), None, "nginx");
        assert_eq!(preference_applied_wait(Some(&h(&[("preference-applied", "wait=soon")]))), None);
        assert_eq!(preference_applied_wait(Some(&h(&[("prefer", "wait=30")]))), None, "the request's header");
        assert_eq!(preference_applied_wait(None), None);
    }

    #[test]
    fn the_next_long_poll_starts_at_once_only_after_a_held_answer() {
        // A held 304 (the wait ended) and a new revision: at once.
        assert_eq!(pace(true, Some(30), Answer::Current, 30_004), Pace::AtOnce);
        assert_eq!(pace(true, Some(30), Answer::Newer, 12), Pace::AtOnce);
        assert_eq!(pace(true, Some(1), Answer::Current, 500), Pace::AtOnce, "half of a one-second wait");
        // Answered at once: a 304 or an unchanged 200 goes by the schedule (no loop against such an endpoint).
        assert_eq!(pace(true, Some(30), Answer::Current, 999), Pace::Schedule);
        assert_eq!(pace(true, Some(1), Answer::Current, 499), Pace::Schedule);
        // No Preference-Applied (nginx): plain polls, whatever the outcome.
        assert_eq!(pace(true, None, Answer::Current, 30_000), Pace::Schedule);
        assert_eq!(pace(true, None, Answer::Newer, 3), Pace::Schedule);
        // Not long polling, or a failure: the schedule (and its backoff).
        assert_eq!(pace(false, Some(30), Answer::Newer, 30_000), Pace::Schedule);
        assert_eq!(pace(true, Some(30), Answer::Failed, 30_000), Pace::Schedule);
    }

    /// Long polling on a fake clock: one VM holds the lease through the whole held call (a claim of the wait plus
    /// the timeout), the next long poll is due at once, and after a failure the schedule backs off as ever.
    #[test]
    fn a_long_poll_holds_the_lease_for_its_whole_call_and_the_next_starts_at_once() {
        let control = crate::config::Control {
            cluster: "c".into(),
            authority: "a".into(),
            path: "/b".into(),
            poll_seconds: 10,
            jitter_percent: 0,
            timeout_ms: 5000,
            backoff_max_seconds: 60,
            long_poll_wait_seconds: Some(30),
        };
        let s = Schedule {
            period_ms: 10_000,
            jitter_percent: 0,
            timeout_ms: control.call_timeout_ms(),
            backoff_max_ms: 60_000,
        };
        let LeaseStep::Take(held) = on_tick(None, 1, 1000, &s) else { panic!("due") };
        assert_eq!(held.until_ms, 1000 + 35_000 + LEASE_SLACK_MS);
        // Every tick of the 30 s wait, the other VMs (and the holder) wait: the claim outlives the held call.
        for now in (2000..=1000 + 35_000 + LEASE_SLACK_MS - 1).step_by(1000) {
            for vm in 1..=3 {
                assert_eq!(on_tick(Some(&held), vm, now, &s), LeaseStep::Wait, "vm {vm} at {now}");
            }
        }
        // The wait ends with a 304: the next long poll is due at once and the holder takes it again.
        let ended = 31_010;
        let next =
            on_done(Some(&held), 1, 1000, ended, Ok(pace(true, Some(30), Answer::Current, 30_010)), &s, 0).unwrap();
        assert_eq!((next.holder, next.next_due_ms, next.failures), (0, ended, 0));
        assert!(matches!(on_tick(Some(&next), 1, ended, &s), LeaseStep::Take(Lease { holder: 1, .. })));
        // The endpoint restarts: the call fails; the next attempt backs off by the schedule (poll_seconds), then
        // twice that, as plain polls do.
        let LeaseStep::Take(l) = on_tick(Some(&next), 1, ended, &s) else { panic!("due") };
        let failed = on_done(Some(&l), 1, ended, ended + 5, Err(Cause::Connect), &s, 0).unwrap();
        assert_eq!((failed.next_due_ms, failed.failures), (ended + 9000, 1));
        let LeaseStep::Take(l) = on_tick(Some(&failed), 2, ended + 9000, &s) else { panic!("due") };
        let again = on_done(Some(&l), 2, ended + 9000, ended + 9005, Err(Cause::Connect), &s, 0).unwrap();
        assert_eq!((again.next_due_ms, again.failures), (ended + 9000 + 19_000, 2));
        // Back up: a new revision, the next long poll at once, the failure count reset.
        let LeaseStep::Take(l) = on_tick(Some(&again), 2, ended + 28_000, &s) else { panic!("due") };
        let up = on_done(Some(&l), 2, ended + 28_000, ended + 28_003, Ok(Pace::AtOnce), &s, 0).unwrap();
        assert_eq!((up.next_due_ms, up.failures, up.last.as_str()), (ended + 28_003, 0, "ok"));
    }

    #[test]
    fn the_wake_up_registry() {
        let w = Wakers(vec![1, 0xabc]);
        assert_eq!(w.encode(), "v1 0000000000000001 0000000000000abc");
        assert_eq!(Wakers::decode(w.encode().as_bytes()), Some(w.clone()));
        assert_eq!(Wakers::decode(b"v1"), Some(Wakers(vec![])));
        for bad in ["", "v2 01", "v1 xyz", "v1 01  02", "\u{ff}"] {
            assert_eq!(Wakers::decode(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(Wakers::with(Some(&w), 0xabc), None, "already listed");
        assert_eq!(Wakers::with(Some(&w), 7), Some(Wakers(vec![1, 0xabc, 7])));
        assert_eq!(Wakers::with(None, 7), Some(Wakers(vec![7])));
        let full = Wakers((1..=MAX_WAKERS as u64).collect());
        let next = Wakers::with(Some(&full), 9999).unwrap();
        assert_eq!((next.0.len(), next.0[0], next.0[MAX_WAKERS - 1]), (MAX_WAKERS, 2, 9999), "the oldest goes");
        assert_eq!(w.others(1).collect::<Vec<_>>(), vec![0xabc]);
        assert_eq!(wake_queue("c", "a", "/b", 0xabc), "warden.wake|c|a/b|0000000000000abc");
        assert_eq!(wakers_key("c", "a", "/b"), "warden.wakers|c|a/b");
    }
}
