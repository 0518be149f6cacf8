//! The host clock: manual (tests set and advance it) or real; what the guest sees as time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A shared clock. Cloning gives another handle to the same clock.
///
/// It is what `proxy_get_current_time_nanoseconds`, WASI `clock_time_get` (realtime and monotonic),
/// tick scheduling and http-call timeouts use.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
enum ClockInner {
    Manual(Mutex<ManualState>),
    Real { origin: Instant },
}

#[derive(Debug)]
struct ManualState {
    now: SystemTime,
    monotonic: Duration,
}

impl Clock {
    /// A clock that only moves when told to (`set`, `advance`).
    pub fn manual(start: SystemTime) -> Clock {
        Clock { inner: Arc::new(ClockInner::Manual(Mutex::new(ManualState { now: start, monotonic: Duration::ZERO }))) }
    }

    /// A manual clock starting at a fixed, arbitrary instant (2025-01-01T00:00:00Z).
    pub fn manual_default() -> Clock {
        Clock::manual(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
    }

    /// The machine's clocks.
    pub fn real() -> Clock {
        Clock { inner: Arc::new(ClockInner::Real { origin: Instant::now() }) }
    }

    pub fn is_manual(&self) -> bool {
        matches!(*self.inner, ClockInner::Manual(_))
    }

    /// Wall-clock time.
    pub fn now(&self) -> SystemTime {
        match &*self.inner {
            ClockInner::Manual(m) => lock(m).now,
            ClockInner::Real { .. } => SystemTime::now(),
        }
    }

    /// Monotonic time since the clock was created.
    pub fn monotonic(&self) -> Duration {
        match &*self.inner {
            ClockInner::Manual(m) => lock(m).monotonic,
            ClockInner::Real { origin } => origin.elapsed(),
        }
    }

    /// Wall-clock time as nanoseconds since the Unix epoch (0 before it).
    pub fn now_nanos(&self) -> u64 {
        self.now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }

    /// Sets wall-clock time (manual clocks only; a no-op on a real clock). Monotonic time moves
    /// forward by the difference when it is positive.
    pub fn set(&self, t: SystemTime) {
        if let ClockInner::Manual(m) = &*self.inner {
            let mut s = lock(m);
            if let Ok(d) = t.duration_since(s.now) {
                s.monotonic += d;
            }
            s.now = t;
        }
    }

    /// Steps wall-clock time to `t`, forward or back, without moving monotonic time (manual clocks only; a no-op on
    /// a real clock): what an NTP step or an operator's `date -s` does to a running gateway. Ticks and call
    /// timeouts keep their monotonic schedule; only the time the guest reads jumps.
    pub fn step_wall(&self, t: SystemTime) {
        if let ClockInner::Manual(m) = &*self.inner {
            lock(m).now = t;
        }
    }

    /// Moves a manual clock forward (a no-op on a real clock). Prefer `Plugin::advance`, which
    /// also fires ticks and timeouts that fall due.
    pub fn advance(&self, d: Duration) {
        if let ClockInner::Manual(m) = &*self.inner {
            let mut s = lock(m);
            s.now += d;
            s.monotonic += d;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
