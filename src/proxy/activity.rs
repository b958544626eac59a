//! What the request path and the connection share about one client connection: when
//! a head is being read and how long the connection has been idle (for the connection
//! task's timers), which request stands in for a head the framing tracker refused (and
//! why), whether an upgrade was accepted, and whether the stream was cut off for a
//! control-frame flood. The server's stream wrapper records; the request path and the
//! connection task read. It lives with the request path because both layers need it
//! and the server already depends on the request path, never the other way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::ProxyError;
use crate::telemetry::ControlFrame;

/// Connection state shared by the stream wrapper, the connection task and the request
/// path. The I/O path only bumps counters (no clock reads); the connection task turns
/// them into times when it wakes, which it does when a head starts and at deadlines.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bumped on every write and finished request (reads are covered by the head timer:
    /// between requests, any byte read starts a head).
    ops: AtomicU64,
    /// Bumped when a request head starts.
    heads: AtomicU64,
    /// A head is being read.
    in_head: AtomicBool,
    /// Requests being handled (until their response head).
    active: AtomicUsize,
    /// Request heads read so far on this connection.
    heads_done: AtomicU64,
    /// Index of the request standing in for a refused head (`u64::MAX`: none), and why
    /// it was refused (see [`refusal_code`]).
    refused_at: AtomicU64,
    refusal: AtomicU8,
    /// Requests the request path has started (HTTP/1 answers them in order).
    requests: AtomicU64,
    /// The request path accepted an upgrade (101): the stream is no longer HTTP/1.
    upgraded: AtomicBool,
    /// The stream was cut off for a control-frame flood: 1 + the [`ControlFrame`].
    flooded: AtomicU8,
    /// Wakes the connection task when a head starts, so it re-arms its timer from the
    /// idle deadline to the (shorter) head deadline.
    pub head_started: tokio::sync::Notify,
}

/// Why the connection task should close a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    SlowHead,
    Idle,
}

/// What the connection task remembers between wake-ups.
#[derive(Debug)]
pub struct Observed {
    ops: u64,
    last_change: Instant,
    head: u64,
    head_since: Instant,
}

impl Observed {
    pub fn new() -> Self {
        let now = Instant::now();
        Observed { ops: 0, last_change: now, head: 0, head_since: now }
    }
}

impl Default for Observed {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        let a = Activity::default();
        a.refused_at.store(u64::MAX, Ordering::Relaxed);
        a
    }

    /// Called once per request, in order: is this request the stand-in for a head the
    /// framing tracker refused, and with what answer? Requests before it are unaffected.
    pub fn next_request_refusal(&self) -> Option<ProxyError> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        if index < self.refused_at.load(Ordering::Relaxed) {
            return None;
        }
        Some(refusal_from_code(self.refusal.load(Ordering::Relaxed)))
    }

    /// The stream wrapper read `n` whole heads; `refused` says which of them (by index
    /// among the `n`) was refused, and the answer it gets.
    pub(crate) fn heads_read(&self, n: u32, refused: Option<(u32, ProxyError)>) {
        let before = self.heads_done.fetch_add(u64::from(n), Ordering::Relaxed);
        if let Some((i, why)) = refused {
            self.refusal.store(refusal_code(why), Ordering::Relaxed);
            self.refused_at.store(before + u64::from(i), Ordering::Relaxed);
        }
    }

    /// A request head began (the head timer starts, and the connection task is woken
    /// to arm it).
    pub(crate) fn head_began(&self) {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.in_head.store(true, Ordering::Relaxed);
        self.head_started.notify_one();
    }

    /// No head is being read (any more).
    pub(crate) fn head_ended(&self) {
        if self.in_head.load(Ordering::Relaxed) {
            self.in_head.store(false, Ordering::Relaxed);
        }
    }

    /// Something was written to the client.
    pub(crate) fn wrote(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the request path accepted an upgrade (the stream is not HTTP/1 any more).
    pub(crate) fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// The stream was cut off for a flood of `frame`s.
    pub(crate) fn cut_for_flood(&self, frame: ControlFrame) {
        self.flooded.store(frame as u8 + 1, Ordering::Relaxed);
    }

    /// The connection switched protocols; stop following HTTP/1 framing.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// The control frame the client flooded the connection with, once it was cut off.
    pub fn flooded(&self) -> Option<ControlFrame> {
        match self.flooded.load(Ordering::Relaxed) {
            0 => None,
            n => ControlFrame::ALL.get(usize::from(n - 1)).copied(),
        }
    }

    /// Count a request as active until the guard drops.
    pub fn request(&self) -> ActiveRequest<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self)
    }

    /// When to look again, and whether the connection is over its limits now.
    pub fn check(
        &self,
        seen: &mut Observed,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> (Duration, Option<Expired>) {
        let now = Instant::now();
        let ops = self.ops.load(Ordering::Relaxed);
        if ops != seen.ops {
            seen.ops = ops;
            seen.last_change = now;
        }
        let head = self.heads.load(Ordering::Relaxed);
        if head != seen.head {
            seen.head = head;
            seen.head_since = now;
        }
        if self.in_head.load(Ordering::Relaxed) {
            let deadline = seen.head_since + header_timeout;
            return match deadline.checked_duration_since(now) {
                Some(wait) if !wait.is_zero() => (wait, None),
                _ => (Duration::ZERO, Some(Expired::SlowHead)),
            };
        }
        if self.active.load(Ordering::Relaxed) > 0 || idle_timeout.is_zero() {
            return (idle_timeout.max(Duration::from_secs(1)), None);
        }
        match (seen.last_change + idle_timeout).checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => (wait, None),
            _ => (Duration::ZERO, Some(Expired::Idle)),
        }
    }
}

pub struct ActiveRequest<'a>(&'a Activity);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// A refusal as stored in [`Activity`] (only the answers the tracker gives).
fn refusal_code(why: ProxyError) -> u8 {
    match why {
        ProxyError::HeaderTooLarge => 1,
        ProxyError::UriTooLong => 2,
        _ => 0,
    }
}

fn refusal_from_code(code: u8) -> ProxyError {
    match code {
        1 => ProxyError::HeaderTooLarge,
        2 => ProxyError::UriTooLong,
        _ => ProxyError::BadRequest,
    }
}
