//! A second, independent reading of HTTP/1.1 request framing, run over the bytes the
//! server reads before hyper sees them. It does three things hyper cannot be asked to:
//!
//! - **Refuse what hyper would answer bare.** A head hyper's parser rejects (bad bytes,
//!   `HTTP/1.2`, an invalid or differing `Content-Length`, a `Transfer-Encoding` that does
//!   not end in `chunked`) or one over `max_header_bytes` would get hyper's own 400/431
//!   with no body and no `x-switchyard-error`. The tracker refuses such a head itself,
//!   with the same rules, and hands hyper a fixed stand-in head instead ([`STAND_IN`]);
//!   the request path answers that request from the connection's verdict, so the
//!   response carries its cause and comes after every response before it (pipelining
//!   keeps its order).
//! - **Refuse ambiguous framing.** hyper resolves a head with both `Content-Length` and
//!   `Transfer-Encoding` by dropping the length (RFC 9112 §6.3 allows it); SPEC.md wants
//!   it refused, since a front proxy that picked the other header would see another
//!   request boundary (request smuggling).
//! - **Time heads.** It tells the connection when a head is being read (for
//!   `header_read_timeout`).
//!
//! To refuse a head before hyper sees any of it, a head that spans reads is held back
//! until it is complete (it is copied anyway, to be parsed); bodies, and heads that
//! arrive whole, pass through untouched. It follows message boundaries (heads,
//! fixed-length and chunked bodies) only far enough to find every head; when it cannot
//! follow the stream (an upgrade, HTTP/2, a chunked body hyper will fail) it stops
//! looking and passes everything through.

mod classify;

use crate::proxy::ProxyError;
use classify::{classify, find_head_end};

/// What hyper is given in place of a refused head: a request it parses without
/// complaint, which the request path never forwards (it answers from the verdict).
pub const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// The most hex digits a chunk size may have (leading zeros count).
const MAX_CHUNK_DIGITS: u8 = 16;

/// What one `feed` saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// A new request head started (its first byte arrived).
    pub head_started: bool,
    /// A request head ended.
    pub head_done: bool,
    /// Heads completed in this read (a refused one included).
    pub heads: u32,
    /// A head was refused: its index among this read's heads, and the answer it gets.
    pub refused: Option<(u32, ProxyError)>,
    /// What to hand hyper from this read.
    pub pass: Pass,
}

/// What of a read goes on to hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The read's first N bytes, as they are (the rest is part of a head held back).
    Direct(usize),
    /// The bytes from [`Framing::take_out`] instead of the read (a held head completed,
    /// or a head was refused).
    Rebuilt,
}

impl Default for Pass {
    fn default() -> Self {
        Pass::Direct(0)
    }
}

#[derive(Debug)]
pub struct Framing {
    state: State,
    head: Vec<u8>,
    /// Blank lines before a request line have arrived (they count toward the head's
    /// time limit, so a client cannot hold a connection by trickling CRLFs).
    leading: bool,
    max_head: usize,
    /// Bytes for hyper when a read could not be passed as it was.
    out: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (or inside) a request head.
    Head,
    /// A fixed-length body with this many bytes left.
    Body(u64),
    /// Chunk size line: the size so far, its digits so far, and whether we are past
    /// the digits.
    ChunkSize {
        size: u64,
        digits: u8,
        ext: bool,
    },
    ChunkData(u64),
    /// The CRLF after chunk data: bytes still to skip.
    ChunkEnd(u8),
    /// Trailer section: length of the current line (without CR).
    Trailer(usize),
    /// Not HTTP/1 request framing any more (upgrade, h2, or a body hyper will fail):
    /// everything passes.
    Off,
    /// A head was refused: nothing after it reaches hyper.
    Refused,
}

/// Where one `feed` stands: how much of the read is cleared for hyper, and whether
/// what is cleared is being assembled in `out` rather than passed in place.
struct Cursor {
    cleared: usize,
    rebuilt: bool,
}

impl Framing {
    pub fn new(max_head: usize) -> Self {
        Framing { state: State::Head, head: Vec::new(), leading: false, max_head, out: Vec::new() }
    }

    /// True while part of a head has been read.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && (self.leading || !self.head.is_empty())
    }

    /// Stop following the stream (it is not HTTP/1 any more: a 101 was sent). Bytes
    /// held as the start of a head were the new protocol's: they are appended to `to`.
    pub fn stop(&mut self, to: &mut Vec<u8>) {
        if self.state == State::Off {
            return;
        }
        if self.state != State::Refused {
            self.state = State::Off;
            to.extend_from_slice(&self.head);
        }
        self.head = Vec::new();
        self.leading = false;
    }

    /// True once a head was refused: nothing more is passed on.
    pub fn refused(&self) -> bool {
        self.state == State::Refused
    }

    /// The bytes to hand hyper after a feed that returned [`Pass::Rebuilt`], swapped
    /// into `into` (whose buffer this keeps for next time: no allocation per read).
    pub fn take_out(&mut self, into: &mut Vec<u8>) {
        into.clear();
        std::mem::swap(into, &mut self.out);
    }

    /// True between messages (nothing of the next head read yet).
    #[cfg(test)]
    pub fn idle(&self) -> bool {
        (self.state == State::Head && self.head.is_empty()) || self.state == State::Off
    }

    pub fn feed(&mut self, input: &[u8]) -> Seen {
        let mut seen = Seen::default();
        let mut at = 0;
        let mut cur = Cursor { cleared: 0, rebuilt: false };
        while at < input.len() {
            match self.state {
                State::Refused => break,
                State::Off => {
                    at = input.len();
                    self.clear_to(input, &mut cur, at);
                }
                State::Head => {
                    let held = self.head.len();
                    if held == 0 {
                        // Empty lines before a request line are allowed (RFC 9112 §2.2).
                        let skip = input[at..].iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        if skip > 0 && !self.leading {
                            self.leading = true;
                            seen.head_started = true;
                        }
                        at += skip;
                        self.clear_to(input, &mut cur, at);
                        if at == input.len() {
                            break;
                        }
                        if !self.leading {
                            seen.head_started = true;
                        }
                        self.leading = false;
                    }
                    // A head that began in this read is searched in place; only an
                    // unfinished one is copied (and held), never more than the limit.
                    let most = (self.max_head + 1).saturating_sub(held);
                    let rest = &input[at..];
                    let found = if held == 0 {
                        find_head_end(rest, 0)
                    } else {
                        self.head.extend_from_slice(&rest[..rest.len().min(most)]);
                        find_head_end(&self.head, held)
                    };
                    let Some(end) = found else {
                        if held == 0 {
                            self.head.extend_from_slice(&rest[..rest.len().min(most)]);
                        }
                        if self.head.len() > self.max_head {
                            self.refuse(input, &mut cur, &mut seen, ProxyError::HeaderTooLarge);
                        }
                        break;
                    };
                    let head_end = at + (end - held);
                    seen.head_done = true;
                    let verdict = if end > self.max_head {
                        Err(ProxyError::HeaderTooLarge)
                    } else if held == 0 {
                        classify(&input[at..head_end])
                    } else {
                        self.head.truncate(end);
                        classify(&self.head)
                    };
                    match verdict {
                        Ok(next) => {
                            if held > 0 {
                                // The head began in an earlier read and was held back:
                                // it goes first, then the rest of this read.
                                self.rebuild(input, &mut cur);
                                self.out.extend_from_slice(&self.head[..held]);
                            }
                            self.clear_to(input, &mut cur, head_end);
                            seen.heads += 1;
                            self.state = next;
                            self.head.clear();
                            at = head_end;
                        }
                        Err(refusal) => {
                            self.refuse(input, &mut cur, &mut seen, refusal);
                            break;
                        }
                    }
                }
                State::Body(n) => {
                    let take = n.min((input.len() - at) as u64);
                    at += take as usize;
                    self.state = if n == take { State::Head } else { State::Body(n - take) };
                    self.clear_to(input, &mut cur, at);
                }
                State::ChunkSize { size, digits, ext } => {
                    let b = input[at];
                    self.state = match b {
                        b'\n' if digits == 0 => State::Off,
                        b'\n' if size == 0 => State::Trailer(0),
                        b'\n' => State::ChunkData(size),
                        _ if ext || b == b'\r' || b == b';' || b == b' ' || b == b'\t' => {
                            State::ChunkSize { size, digits, ext: true }
                        }
                        _ => match (b as char).to_digit(16) {
                            // At most 16 digits and under 2^63: a size that a reader
                            // with a signed 64-bit length (or a digit limit) decodes
                            // differently puts the next request somewhere else for it.
                            Some(d) if digits < MAX_CHUNK_DIGITS && size < (1 << 59) => {
                                State::ChunkSize { size: size * 16 + u64::from(d), digits: digits + 1, ext }
                            }
                            Some(_) => {
                                self.spoil(input, &mut cur, at);
                                break;
                            }
                            None => State::Off,
                        },
                    };
                    at += 1;
                    self.clear_to(input, &mut cur, at);
                }
                State::ChunkData(n) => {
                    let take = n.min((input.len() - at) as u64);
                    at += take as usize;
                    self.state = if n == take { State::ChunkEnd(2) } else { State::ChunkData(n - take) };
                    self.clear_to(input, &mut cur, at);
                }
                State::ChunkEnd(left) => {
                    let b = input[at];
                    at += 1;
                    self.state = match (left, b) {
                        (_, b'\n') => State::ChunkSize { size: 0, digits: 0, ext: false },
                        (2, b'\r') => State::ChunkEnd(1),
                        _ => State::Off,
                    };
                    self.clear_to(input, &mut cur, at);
                }
                State::Trailer(len) => {
                    let b = input[at];
                    at += 1;
                    self.state = match b {
                        b'\n' if len == 0 => State::Head,
                        b'\n' => State::Trailer(0),
                        b'\r' => State::Trailer(len),
                        _ => State::Trailer(len + 1),
                    };
                    self.clear_to(input, &mut cur, at);
                }
            }
        }
        seen.pass = if cur.rebuilt { Pass::Rebuilt } else { Pass::Direct(cur.cleared) };
        seen
    }

    /// Everything of `input` up to `to` goes to hyper.
    fn clear_to(&mut self, input: &[u8], cur: &mut Cursor, to: usize) {
        if cur.rebuilt {
            self.out.extend_from_slice(&input[cur.cleared..to]);
        }
        cur.cleared = to;
    }

    /// From here on this read is assembled in `out` (what was cleared so far first).
    fn rebuild(&mut self, input: &[u8], cur: &mut Cursor) {
        if !cur.rebuilt {
            self.out.extend_from_slice(&input[..cur.cleared]);
            cur.rebuilt = true;
        }
    }

    /// A chunk size no two readers would agree on: hyper gets the body up to it, then
    /// a byte no chunk-size line may hold, so its decoder fails the body (the request
    /// path answers 400 `malformed-request` and the upstream request is aborted), and
    /// nothing after it.
    fn spoil(&mut self, input: &[u8], cur: &mut Cursor, at: usize) {
        self.clear_to(input, cur, at);
        self.rebuild(input, cur);
        self.out.push(0);
        self.state = State::Refused;
    }

    /// The head being read is refused: hyper gets what was cleared before it, then the
    /// stand-in, and nothing after.
    fn refuse(&mut self, input: &[u8], cur: &mut Cursor, seen: &mut Seen, refusal: ProxyError) {
        self.rebuild(input, cur);
        self.out.extend_from_slice(STAND_IN);
        seen.refused = Some((seen.heads, refusal));
        seen.heads += 1;
        seen.head_done = true;
        self.state = State::Refused;
        self.head = Vec::new();
        self.leading = false;
    }
}

#[cfg(test)]
mod tests;
