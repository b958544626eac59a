//! The HTTP/2 frames a client sends, followed before hyper reads them: the connection
//! preface, then each frame's 9-byte header (payloads are skipped, never copied), so the
//! connection can tell HTTP/2 from HTTP/1 by its first line and count the control
//! frames that cost the server a write each: PING (answered with an ACK) and SETTINGS
//! (applied and acknowledged), with or without the ACK flag.
//!
//! **Limits.** Each connection has a [`Budget`] per kind: 1,000 frames at once, then
//! 100 a second (a token bucket; neither kind can spend the other's). Past it the
//! connection is closed and counted in `switchyard_client_floods_total{frame}`.
//! Legitimate clients stay far below: h2load and curl send one SETTINGS and ACK ours;
//! keep-alive pings (gRPC's included) come every few seconds at most; a client
//! estimating its window (gRPC's BDP pings, hyper's adaptive window) pings about once
//! per round trip while data arrives, and stops once the estimate settles. A flood of
//! 10,000 PINGs, or of PING ACKs we never asked for, is cut after about 1,000 of them;
//! nothing a client sends can keep the server busier than 100 of each a second plus
//! the burst. nginx instead closes a connection whose bytes outweigh its payload many
//! times over; a per-kind rate is simpler to state and to test, and a busy connection's
//! DATA never buys its pings more room.
//!
//! The request path stays cheap: a few integer operations per frame header, no lock,
//! no allocation, and the clock is read only when a budget runs short (and once, for
//! its first frame).

use std::time::{Duration, Instant};

use crate::telemetry::ControlFrame;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface's request line: no HTTP/1 request starts with it (its version is 2.0),
/// so a stream that does is HTTP/2's.
const PREFACE_LINE: usize = 16;

/// A GOAWAY frame on stream 0: last stream 0, error PROTOCOL_ERROR (0x1). What a server
/// sends a client whose preface is wrong (RFC 9113 §3.4, h2spec 3.5).
pub const GOAWAY_PROTOCOL_ERROR: [u8; 17] = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1];

const HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;

/// Control frames whose headers a read completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub pings: u32,
    pub settings: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface have matched.
    Preface(u8),
    /// Inside a frame header: bytes of it read, and its payload length and type so far.
    Header { at: u8, len: u32, kind: u8 },
    /// Payload bytes still to skip.
    Payload(u32),
    /// The stream did not begin with the preface: nothing more to follow.
    NotHttp2,
}

/// Where a client's stream stands: in the preface, a frame header or a payload, or not
/// HTTP/2 at all.
#[derive(Debug)]
pub struct Frames {
    state: State,
}

impl Default for Frames {
    fn default() -> Self {
        Frames { state: State::Preface(0) }
    }
}

impl Frames {
    /// The stream began with the preface's request line: it speaks HTTP/2.
    pub fn is_http2(&self) -> bool {
        match self.state {
            State::Preface(n) => usize::from(n) >= PREFACE_LINE,
            State::NotHttp2 => false,
            State::Header { .. } | State::Payload(_) => true,
        }
    }

    /// Follow the next bytes the client sent; returns the control frames among them.
    pub fn feed(&mut self, input: &[u8]) -> Control {
        let mut seen = Control::default();
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.state {
                State::NotHttp2 => break,
                State::Preface(n) => {
                    let n = usize::from(n);
                    let take = (PREFACE.len() - n).min(rest.len());
                    if rest[..take] != PREFACE[n..n + take] {
                        self.state = State::NotHttp2;
                        break;
                    }
                    at += take;
                    self.state = if n + take == PREFACE.len() {
                        State::Header { at: 0, len: 0, kind: 0 }
                    } else {
                        State::Preface((n + take) as u8)
                    };
                }
                State::Header { at: 0, .. } if rest.len() >= HEADER => {
                    // The common case: a whole header in this read.
                    let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]);
                    at += HEADER;
                    self.end_header(len, rest[3], &mut seen);
                }
                State::Header { at: h, len, kind } => {
                    let b = rest[0];
                    at += 1;
                    let (len, kind) = match h {
                        0..=2 => (len << 8 | u32::from(b), kind),
                        3 => (len, b),
                        _ => (len, kind),
                    };
                    if usize::from(h) + 1 == HEADER {
                        self.end_header(len, kind, &mut seen);
                    } else {
                        self.state = State::Header { at: h + 1, len, kind };
                    }
                }
                State::Payload(left) => {
                    let take = rest.len().min(left as usize);
                    at += take;
                    let left = left - take as u32;
                    self.state =
                        if left == 0 { State::Header { at: 0, len: 0, kind: 0 } } else { State::Payload(left) };
                }
            }
        }
        seen
    }

    fn end_header(&mut self, len: u32, kind: u8, seen: &mut Control) {
        match kind {
            PING => seen.pings += 1,
            SETTINGS => seen.settings += 1,
            _ => {}
        }
        self.state = if len == 0 { State::Header { at: 0, len: 0, kind: 0 } } else { State::Payload(len) };
    }
}

/// One kind of control frame a connection may still send: a token bucket.
#[derive(Debug)]
pub struct Budget {
    tokens: u32,
    /// When the tokens were last topped up (set by the first frame).
    since: Option<Instant>,
}

impl Budget {
    /// Frames a connection may send at once.
    pub const BURST: u32 = 1_000;
    /// One more frame every this long (100 a second).
    const REFILL: Duration = Duration::from_millis(10);

    pub fn new() -> Self {
        Budget { tokens: Self::BURST, since: None }
    }

    /// Spend `n` frames; false once the budget is exhausted. `clock` is read for the
    /// first frame and when the tokens run short, never otherwise.
    pub fn spend(&mut self, n: u32, clock: impl Fn() -> Instant) -> bool {
        if n == 0 {
            return true;
        }
        let since = *self.since.get_or_insert_with(&clock);
        if n > self.tokens {
            let now = clock();
            let earned = now.saturating_duration_since(since).as_nanos() / Self::REFILL.as_nanos();
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            if earned > 0 {
                let tokens = self.tokens.saturating_add(earned);
                self.tokens = tokens.min(Self::BURST);
                // Keep the part of a token already earned, unless the bucket is full.
                self.since = Some(if tokens >= Self::BURST { now } else { since + Self::REFILL * earned });
            }
        }
        match self.tokens.checked_sub(n) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => {
                self.tokens = 0;
                false
            }
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection's budgets for the control frames it sends.
#[derive(Debug, Default)]
pub struct Budgets {
    pings: Budget,
    settings: Budget,
}

impl Budgets {
    /// Spend what a read brought; the kind that ran out, if one did.
    pub fn spend(&mut self, seen: Control, clock: impl Fn() -> Instant) -> Result<(), ControlFrame> {
        if !self.pings.spend(seen.pings, &clock) {
            return Err(ControlFrame::Ping);
        }
        if !self.settings.spend(seen.settings, &clock) {
            return Err(ControlFrame::Settings);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One frame: length, type, flags, stream id, payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        frames.iter().for_each(|f| bytes.extend_from_slice(f));
        bytes
    }

    #[test]
    fn counts_pings_and_settings_with_and_without_ack() {
        let bytes = connection(&[
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
            frame(0x8, 0, 0, &[0, 1, 0, 0]), // WINDOW_UPDATE
            frame(PING, 0, 0, &[7; 8]),
            frame(PING, 1, 0, &[7; 8]),
            frame(SETTINGS, 1, 0, &[]),
            frame(0x1, 0x5, 1, b"\x82\x86\x84"), // HEADERS
            frame(0x0, 0x1, 1, &[PING; 300]),    // DATA full of 0x6 bytes: not frames
        ]);
        let mut f = Frames::default();
        assert!(!f.is_http2());
        assert_eq!(f.feed(&bytes), Control { pings: 2, settings: 2 });
        assert!(f.is_http2());
        assert_eq!(f.state, State::Header { at: 0, len: 0, kind: 0 }, "ends between frames");
    }

    #[test]
    fn the_preface_line_marks_http2_and_anything_else_is_not_followed() {
        let mut f = Frames::default();
        f.feed(&PREFACE[..PREFACE_LINE - 1]);
        assert!(!f.is_http2());
        f.feed(&PREFACE[PREFACE_LINE - 1..PREFACE_LINE]);
        assert!(f.is_http2(), "the request line alone is HTTP/2's");
        for other in [&b"GET / HTTP/1.1\r\n"[..], b"PRI * HTTP/1.1\r\n", b"\r\nPRI", b"PRI * HTTP/2.0\r\n\r\nXX"] {
            let mut f = Frames::default();
            assert_eq!(f.feed(other), Control::default());
            assert_eq!(f.feed(&frame(PING, 0, 0, &[0; 8])), Control::default());
            assert!(!f.is_http2(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_budget_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new();
        assert!(b.spend(Budget::BURST, || t0));
        assert!(!b.spend(1, || t0), "the burst is spent");
        let mut b = Budget::new();
        assert!(b.spend(Budget::BURST, || t0));
        // 100 a second: one more every 10 ms, fractions kept.
        assert!(b.spend(1, || t0 + Duration::from_millis(15)));
        assert!(!b.spend(1, || t0 + Duration::from_millis(19)));
        assert!(b.spend(1, || t0 + Duration::from_millis(20)));
        assert!(b.spend(100, || t0 + Duration::from_millis(1_020)));
        // Idle time refills up to the burst, never past it.
        assert!(b.spend(Budget::BURST, || t0 + Duration::from_secs(3_600)));
        assert!(!b.spend(1, || t0 + Duration::from_secs(3_600)));
    }

    #[test]
    fn a_steady_client_under_the_rate_is_never_refused() {
        // A keep-alive ping every 10 ms for an hour (the rate exactly), after a burst.
        let t0 = Instant::now();
        let mut b = Budget::new();
        assert!(b.spend(Budget::BURST, || t0));
        for i in 1..=360_000u32 {
            assert!(b.spend(1, || t0 + Duration::from_millis(10) * i), "refused at ping {i}");
        }
    }

    #[test]
    fn budgets_name_the_kind_that_ran_out() {
        let t0 = Instant::now();
        let mut b = Budgets::default();
        assert_eq!(b.spend(Control { pings: 900, settings: 900 }, || t0), Ok(()));
        assert_eq!(b.spend(Control { pings: 0, settings: 101 }, || t0), Err(ControlFrame::Settings));
        assert_eq!(b.spend(Control { pings: 101, settings: 0 }, || t0), Err(ControlFrame::Ping));
    }

    proptest! {
        /// However the stream is cut into reads, the same frames are counted and it ends
        /// in the same place.
        #[test]
        fn cuts_do_not_matter(frames in proptest::collection::vec((0u8..10, any::<u8>(), 0usize..300), 0..40),
                              cuts in proptest::collection::vec(1usize..40, 1..50)) {
            let frames: Vec<Vec<u8>> = frames.iter().map(|(k, fl, len)| frame(*k, *fl, 1, &vec![*k; *len])).collect();
            let pings = frames.iter().filter(|f| f[3] == PING).count() as u32;
            let settings = frames.iter().filter(|f| f[3] == SETTINGS).count() as u32;
            let bytes = connection(&frames);
            let mut whole = Frames::default();
            prop_assert_eq!(whole.feed(&bytes), Control { pings, settings });
            let mut cut = Frames::default();
            let (mut at, mut total, mut sizes) = (0, Control::default(), cuts.iter().cycle());
            while at < bytes.len() {
                let end = (at + sizes.next().unwrap()).min(bytes.len());
                let seen = cut.feed(&bytes[at..end]);
                total.pings += seen.pings;
                total.settings += seen.settings;
                at = end;
            }
            prop_assert_eq!(total, Control { pings, settings });
            prop_assert_eq!(cut.state, whole.state);
        }
    }
}
