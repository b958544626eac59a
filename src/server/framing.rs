//! A second, independent reading of HTTP/1.1 request framing, run over the bytes the
//! server reads. hyper resolves a request with both `Content-Length` and
//! `Transfer-Encoding` by dropping the length (RFC 9112 §6.3 allows it), which leaves no
//! trace the service could check; SPEC.md wants such requests refused, because a
//! front proxy that picked the other header would see a different request boundary
//! (request smuggling). This tracker follows message boundaries (heads, fixed-length
//! and chunked bodies) just far enough to see every head as sent, and also tells the
//! connection when a head is being read (for `header_read_timeout`).
//!
//! It never changes a byte; when it cannot follow the stream (an upgrade, HTTP/2, a
//! head hyper will reject anyway) it stops looking.

/// What one `feed` saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// A new request head started (its first byte arrived).
    pub head_started: bool,
    /// A request head ended.
    pub head_done: bool,
    /// That head stated its length ambiguously.
    pub ambiguous: bool,
    /// Heads completed in this read.
    pub heads: u32,
    /// Of those, the first (0-based) that stated its length ambiguously.
    pub first_ambiguous: Option<u32>,
}

#[derive(Debug)]
pub struct Framing {
    state: State,
    head: Vec<u8>,
    /// Blank lines before a request line have arrived (they count toward the head's
    /// time limit, so a client cannot hold a connection by trickling CRLFs).
    leading: bool,
    max_head: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (or inside) a request head.
    Head,
    /// A fixed-length body with this many bytes left.
    Body(u64),
    /// Chunk size line: the size so far, and whether we are past the digits.
    ChunkSize {
        size: u64,
        digits: bool,
        ext: bool,
    },
    ChunkData(u64),
    /// The CRLF after chunk data: bytes still to skip.
    ChunkEnd(u8),
    /// Trailer section: length of the current line (without CR).
    Trailer(usize),
    /// Not HTTP/1 request framing any more (upgrade, h2, or hyper rejects it).
    Off,
}

impl Framing {
    pub fn new(max_head: usize) -> Self {
        Framing { state: State::Head, head: Vec::new(), leading: false, max_head }
    }

    /// True while part of a head has been read.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && (self.leading || !self.head.is_empty())
    }

    /// Stop following the stream (it is not HTTP/1 any more, e.g. after a 101).
    pub fn stop(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
        self.leading = false;
    }

    /// True between messages (nothing of the next head read yet).
    #[cfg(test)]
    pub fn idle(&self) -> bool {
        (self.state == State::Head && self.head.is_empty()) || self.state == State::Off
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            match self.state {
                State::Off => break,
                State::Head => {
                    if self.head.is_empty() {
                        // Empty lines before a request line are allowed (RFC 9112 §2.2).
                        let skip = bytes.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        if skip > 0 && !self.leading {
                            self.leading = true;
                            seen.head_started = true;
                        }
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            break;
                        }
                        if !self.leading {
                            seen.head_started = true;
                        }
                        self.leading = false;
                    }
                    let before = self.head.len();
                    self.head.extend_from_slice(bytes);
                    match find_head_end(&self.head, before) {
                        Some(end) => {
                            let rest = self.head.len() - end;
                            let consumed = bytes.len() - rest;
                            bytes = &bytes[consumed..];
                            self.head.truncate(end);
                            let (next, ambiguous) = classify(&self.head);
                            seen.head_done = true;
                            self.leading = false;
                            if ambiguous && seen.first_ambiguous.is_none() {
                                seen.first_ambiguous = Some(seen.heads);
                            }
                            seen.heads += 1;
                            seen.ambiguous |= ambiguous;
                            self.head.clear();
                            self.state = next;
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                self.head = Vec::new();
                                self.state = State::Off;
                            }
                            break;
                        }
                    }
                }
                State::Body(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take { State::Head } else { State::Body(n - take) };
                }
                State::ChunkSize { size, digits, ext } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match b {
                        b'\n' if !digits => State::Off,
                        b'\n' if size == 0 => State::Trailer(0),
                        b'\n' => State::ChunkData(size),
                        _ if ext || b == b'\r' || b == b';' || b == b' ' || b == b'\t' => {
                            State::ChunkSize { size, digits, ext: true }
                        }
                        _ => match (b as char).to_digit(16) {
                            Some(d) if size < (1 << 58) => {
                                State::ChunkSize { size: size * 16 + u64::from(d), digits: true, ext }
                            }
                            _ => State::Off,
                        },
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take { State::ChunkEnd(2) } else { State::ChunkData(n - take) };
                }
                State::ChunkEnd(left) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match (left, b) {
                        (_, b'\n') => State::ChunkSize { size: 0, digits: false, ext: false },
                        (2, b'\r') => State::ChunkEnd(1),
                        _ => State::Off,
                    };
                }
                State::Trailer(len) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match b {
                        b'\n' if len == 0 => State::Head,
                        b'\n' => State::Trailer(0),
                        b'\r' => State::Trailer(len),
                        _ => State::Trailer(len + 1),
                    };
                }
            }
        }
        seen
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

/// What follows a complete head, and whether the head states its length twice.
fn classify(head: &[u8]) -> (State, bool) {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // hyper will reject this head itself; nothing to follow afterwards.
        _ => return (State::Off, false),
    }
    if req.method == Some("CONNECT") || req.method == Some("PRI") {
        return (State::Off, false);
    }
    // An `Upgrade` request is framed like any other: only an accepted upgrade (a 101,
    // signalled by the request path) turns the stream into something else.
    let mut te: Option<&[u8]> = None;
    let mut cl: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl = Some(h.value);
        }
    }
    let ambiguous = te.is_some() && cl.is_some();
    let next = if let Some(te) = te {
        let chunked =
            te.rsplit(|b| *b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if chunked {
            State::ChunkSize { size: 0, digits: false, ext: false }
        } else {
            State::Off
        }
    } else if let Some(cl) = cl {
        match std::str::from_utf8(cl).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => State::Off,
        }
    } else {
        State::Head
    };
    (next, ambiguous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Seen>, Framing) {
        let mut f = Framing::new(65_536);
        let seen = chunks.iter().map(|c| f.feed(c)).collect();
        (seen, f)
    }

    #[test]
    fn follows_keep_alive_requests_with_bodies() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nworld\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // Byte by byte, so every state boundary is crossed mid-read.
        let mut f = Framing::new(65_536);
        let mut heads = 0;
        let mut ambiguous = 0;
        for b in stream {
            let s = f.feed(std::slice::from_ref(b));
            heads += usize::from(s.head_done);
            ambiguous += usize::from(s.ambiguous);
        }
        assert_eq!((heads, ambiguous), (3, 1));
        assert!(f.idle());
        // And all at once.
        let (seen, f) = feed_all(&[stream]);
        assert!(seen[0].ambiguous && seen[0].head_done);
        assert!(f.idle());
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_heads() {
        let (seen, _) = feed_all(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 59\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
        ]);
        assert!(!seen[0].ambiguous && !seen[1].ambiguous && !seen[1].head_started);
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
        assert!(seen[1].ambiguous);
        assert_ne!(f.state, State::Off);
        let (_, f) = feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(f.state, State::Off);
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
            /// every head is seen, none is flagged, and the stream ends between messages.
            #[test]
            fn valid_streams_are_followed_exactly(reqs in proptest::collection::vec(req(), 1..6), cuts in proptest::collection::vec(1usize..64, 1..40)) {
                let bytes = encode(&reqs);
                let mut f = Framing::new(65_536);
                let (mut at, mut heads, mut i) = (0, 0u32, 0);
                while at < bytes.len() {
                    let n = cuts[i % cuts.len()].min(bytes.len() - at);
                    let seen = f.feed(&bytes[at..at + n]);
                    prop_assert!(!seen.ambiguous);
                    heads += seen.heads;
                    at += n;
                    i += 1;
                }
                prop_assert_eq!(heads as usize, reqs.len());
                prop_assert!(f.idle() && !f.in_head());
            }
        }
    }
}
