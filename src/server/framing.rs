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

use crate::proxy::ProxyError;

/// What hyper is given in place of a refused head: a request it parses without
/// complaint, which the request path never forwards (it answers from the verdict).
pub const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// hyper's own limits, mirrored so a head it would refuse is refused here first.
const MAX_HEADERS: usize = 100;
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

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

/// End of the head (index after the blank line), searching from a little before `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// What follows a complete head, or why it is refused: hyper's parsing rules (the same
/// httparse call, its header count, URI and length checks), plus no head that states
/// its length twice.
fn classify(head: &[u8]) -> Result<State, ProxyError> {
    // HTTP/2 with prior knowledge: its preface reads like a head, and is hyper's.
    if head.starts_with(b"PRI * HTTP/2.0\r\n") {
        return Ok(State::Off);
    }
    // Uninitialised slots, as hyper does: zeroing a hundred headers costs more than
    // parsing a typical head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeaderTooLarge),
        // A complete head (it ends in a blank line) that does not parse.
        _ => return Err(ProxyError::BadRequest),
    }
    let path = req.path.unwrap_or("");
    if path.len() > MAX_URI_LEN {
        return Err(ProxyError::UriTooLong);
    }
    // hyper parses the target as an `http::Uri`; doing the same for every request would
    // allocate, so only a target with a byte outside plain origin-form is parsed here.
    if !plain_origin_form(path.as_bytes()) && http::Uri::try_from(path).is_err() {
        return Err(ProxyError::BadRequest);
    }
    if req.method == Some("CONNECT") {
        return Ok(State::Off);
    }
    // An `Upgrade` request is framed like any other: only an accepted upgrade (a 101,
    // signalled by the request path) turns the stream into something else.
    let mut te: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // hyper also refuses the two largest values (they mean "chunked" and "close").
            let n = content_length(h.value).filter(|n| *n <= u64::MAX - 2).ok_or(ProxyError::BadRequest)?;
            if length.is_some_and(|l| l != n) {
                return Err(ProxyError::BadRequest);
            }
            length = Some(n);
        }
    }
    match (te, length) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest),
        (Some(_), None) if req.version != Some(1) => Err(ProxyError::BadRequest),
        (Some(te), None) => {
            let chunked =
                te.rsplit(|b| *b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked {
                Ok(State::ChunkSize { size: 0, digits: 0, ext: false })
            } else {
                Err(ProxyError::BadRequest)
            }
        }
        (None, Some(0) | None) => Ok(State::Head),
        (None, Some(n)) => Ok(State::Body(n)),
    }
}

/// `/` followed by characters any URI parser takes in a path and query (RFC 3986
/// unreserved, sub-delims, `:@/?%`).
fn plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(b))
}

/// A `Content-Length` value as hyper reads it: decimal digits only, no overflow.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Seen>, Framing) {
        let mut f = Framing::new(65_536);
        let seen = chunks.iter().map(|c| f.feed(c)).collect();
        (seen, f)
    }

    /// Feed `chunks` as reads and collect what hyper would be handed.
    fn passed(f: &mut Framing, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Seen>) {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for c in chunks {
            let s = f.feed(c);
            match s.pass {
                Pass::Direct(n) => out.extend_from_slice(&c[..n]),
                Pass::Rebuilt => {
                    let mut v = Vec::new();
                    f.take_out(&mut v);
                    out.extend(v);
                }
            }
            seen.push(s);
        }
        (out, seen)
    }

    #[test]
    fn follows_keep_alive_requests_with_bodies() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nworld\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let valid = &stream[..stream.iter().position(|b| *b == b'G').unwrap()];
        // Byte by byte, so every state boundary is crossed mid-read.
        let mut f = Framing::new(65_536);
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let (out, seen) = passed(&mut f, &chunks);
        let heads: u32 = seen.iter().map(|s| s.heads).sum();
        assert_eq!(heads, 3);
        assert_eq!(seen.iter().filter_map(|s| s.refused).collect::<Vec<_>>(), vec![(0, ProxyError::BadRequest)]);
        assert_eq!(out, [valid, STAND_IN].concat(), "the two valid requests, then the stand-in");
        assert!(f.refused());
        // And all at once.
        let mut f = Framing::new(65_536);
        let (out, seen) = passed(&mut f, &[stream]);
        assert_eq!(seen[0].refused, Some((2, ProxyError::BadRequest)));
        assert_eq!(out, [valid, STAND_IN].concat());
    }

    #[test]
    fn a_head_split_across_reads_reaches_hyper_whole() {
        let mut f = Framing::new(65_536);
        let (out, seen) = passed(&mut f, &[b"GET / HT", b"TP/1.1\r\nHost: a\r\n", b"\r\nGET /2 HTTP/1.1\r"]);
        assert_eq!(seen[0].pass, Pass::Direct(0), "nothing of an unfinished head is passed");
        assert_eq!(seen[1].pass, Pass::Direct(0));
        assert_eq!(seen[2].pass, Pass::Rebuilt);
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (out, _) = passed(&mut f, &[b"\nHost: a\r\n\r\n"]);
        assert_eq!(out, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(f.idle());
    }

    #[test]
    fn refuses_what_hyper_would_answer_bare() {
        let cases: &[(&[u8], ProxyError)] = &[
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", ProxyError::BadRequest),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", ProxyError::BadRequest),
            (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", ProxyError::BadRequest),
            (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", ProxyError::BadRequest),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", ProxyError::BadRequest),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ProxyError::BadRequest),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", ProxyError::BadRequest),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ProxyError::BadRequest),
            (b"GET http://a:b:c/ HTTP/1.1\r\n\r\n", ProxyError::BadRequest),
            (b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", ProxyError::BadRequest),
        ];
        for (head, why) in cases {
            let mut f = Framing::new(65_536);
            let (out, seen) = passed(&mut f, &[head]);
            assert_eq!(seen[0].refused, Some((0, *why)), "{}", String::from_utf8_lossy(head));
            assert_eq!(out, STAND_IN);
            // Nothing after a refusal reaches hyper.
            let (out, _) = passed(&mut f, &[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]);
            assert!(out.is_empty());
        }
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let (_, seen) = passed(&mut Framing::new(65_536), &[format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()]);
        assert_eq!(seen[0].refused, Some((0, ProxyError::HeaderTooLarge)));
        // Equal duplicates are fine, as for hyper.
        let (_, seen) =
            passed(&mut Framing::new(65_536), &[b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"]);
        assert_eq!(seen[0].refused, None);
    }

    #[test]
    fn heads_over_the_limit_are_refused_whole_or_in_pieces() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let (out, seen) = passed(&mut Framing::new(8192), &[big.as_bytes()]);
        assert_eq!(seen[0].refused, Some((0, ProxyError::HeaderTooLarge)));
        assert_eq!(out, STAND_IN);
        // Trickled: refused as soon as the limit is crossed, before the head ends.
        let mut f = Framing::new(8192);
        let chunks: Vec<&[u8]> = big.as_bytes()[..8300].chunks(1000).collect();
        let (out, seen) = passed(&mut f, &chunks);
        assert_eq!(seen.iter().filter_map(|s| s.refused).count(), 1);
        assert_eq!(out, STAND_IN);
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_heads() {
        let (seen, _) = feed_all(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 59\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
        ]);
        assert!(seen[0].refused.is_none() && seen[1].refused.is_none() && !seen[1].head_started);
        assert_eq!(seen[1].pass, Pass::Direct(59));
    }

    #[test]
    fn tracks_when_a_head_is_being_read() {
        let mut f = Framing::new(65_536);
        assert!(f.idle() && !f.in_head());
        assert!(f.feed(b"\r\nGET / HT").head_started);
        assert!(f.in_head());
        assert!(f.feed(b"TP/1.1\r\nHost: a\r\n\r\n").head_done);
        assert!(f.idle());
    }

    #[test]
    fn keeps_following_refused_upgrades_and_stops_at_http2() {
        // An Upgrade header alone changes nothing (the upgrade may be refused).
        let (seen, f) = feed_all(&[
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert!(seen[1].refused.is_some());
        assert!(f.refused());
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00";
        let (seen, f) = feed_all(&[preface]);
        assert_eq!(f.state, State::Off);
        assert_eq!(seen[0].pass, Pass::Direct(preface.len()));
    }

    #[test]
    fn chunk_sizes_past_16_digits_or_2_pow_63_spoil_the_body_for_hyper() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for size in [&b"ffffffffffffffff"[..], b"8000000000000000", b"00000000000000001"] {
            let body = [size, b"\r\nab\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
            // Split inside the digits: the bound holds across reads.
            let (out, _) = passed(&mut Framing::new(65_536), &[head, &body[..9], &body[9..]]);
            let spoiled = [head, &size[..size.len() - 1], b"\0"].concat();
            assert_eq!(out, spoiled, "{}", String::from_utf8_lossy(size));
        }
        for size in [&b"7fffffffffffffff"[..], b"000000000000000a"] {
            let (out, _) = passed(&mut Framing::new(65_536), &[head, size, b"\r\n"]);
            assert_eq!(out, [head, size, b"\r\n"].concat(), "{}", String::from_utf8_lossy(size));
        }
    }

    #[test]
    fn blank_lines_count_as_a_head_in_progress() {
        let mut f = Framing::new(65_536);
        assert!(f.feed(b"\r\n").head_started);
        assert!(f.in_head(), "a CRLF trickle is timed like a slow head");
        assert!(!f.feed(b"\r\nGET / HTTP/1.1\r\n").head_started, "the same head");
        assert!(f.feed(b"Host: a\r\n\r\n").head_done);
        assert!(!f.in_head());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// One valid request: (content-length body | chunked body with these chunk sizes).
        #[derive(Debug, Clone)]
        enum Req {
            Empty,
            Fixed(usize),
            Chunked(Vec<usize>, bool),
        }

        fn encode(reqs: &[Req]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, r) in reqs.iter().enumerate() {
                out.extend_from_slice(format!("POST /r{i} HTTP/1.1\r\nHost: a\r\n").as_bytes());
                match r {
                    Req::Empty => out.extend_from_slice(b"\r\n"),
                    Req::Fixed(n) => {
                        out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
                        // Body bytes that look like a head must not confuse the tracker.
                        out.extend(b"GET / HTTP/1.1\r\n\r\n".iter().cycle().take(*n));
                    }
                    Req::Chunked(sizes, trailer) => {
                        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        for s in sizes {
                            out.extend_from_slice(format!("{s:X};x=y\r\n").as_bytes());
                            out.extend(std::iter::repeat_n(b'\n', *s));
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"0\r\n");
                        if *trailer {
                            out.extend_from_slice(b"X-Sum: 1\r\n");
                        }
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            out
        }

        fn req() -> impl Strategy<Value = Req> {
            prop_oneof![
                Just(Req::Empty),
                (0usize..300).prop_map(Req::Fixed),
                (proptest::collection::vec(1usize..100, 0..4), any::<bool>()).prop_map(|(s, t)| Req::Chunked(s, t)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            /// Valid keep-alive traffic, cut into reads anywhere, is followed exactly:
            /// every head is seen, none is refused, hyper is handed every byte in
            /// order, and the stream ends between messages.
            #[test]
            fn valid_streams_are_followed_exactly(reqs in proptest::collection::vec(req(), 1..6), cuts in proptest::collection::vec(1usize..64, 1..40)) {
                let bytes = encode(&reqs);
                let mut f = Framing::new(65_536);
                let (mut at, mut heads, mut i) = (0, 0u32, 0);
                let mut out = Vec::new();
                while at < bytes.len() {
                    let n = cuts[i % cuts.len()].min(bytes.len() - at);
                    let (passed, seen) = passed(&mut f, &[&bytes[at..at + n]]);
                    prop_assert!(seen[0].refused.is_none());
                    out.extend(passed);
                    heads += seen[0].heads;
                    at += n;
                    i += 1;
                }
                prop_assert_eq!(heads as usize, reqs.len());
                prop_assert!(out == bytes, "hyper is handed exactly the bytes sent");
                prop_assert!(f.idle() && !f.in_head());
            }
        }
    }
}
