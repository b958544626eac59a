//! A client's request head, parsed once in place with httparse, and the verdict on it:
//! the fast path serves it, or it goes to the hyper path, which answers everything
//! unusual or hostile (absolute-form and `*` targets, HTTP/1.0, `Expect`, upgrades,
//! chunked bodies, `Connection` naming other fields, malformed or oversized heads) with
//! the same rules and causes as before. The fast path only ever takes a strict subset
//! of what the hyper path accepts, so a request is never answered differently for
//! having come this way.

use std::mem::MaybeUninit;

/// Header lines the fast path parses; a head with more goes to the hyper path.
pub const MAX_HEADERS: usize = 64;
/// The longest request-target the hyper path serves (hyper's limit).
const MAX_TARGET: usize = (u16::MAX - 1) as usize;

pub type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// What the bytes at the start of the buffer are.
pub enum Verdict<'b> {
    /// Not a whole head yet (and still within the size limit).
    Partial,
    /// A head the fast path serves.
    Fast(Head<'b>),
    /// Anything else: the hyper path answers it.
    Fallback,
}

/// A validated HTTP/1.1 request head, borrowed from the read buffer.
pub struct Head<'b> {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub method: &'b str,
    /// The origin-form target's path and query.
    pub path: &'b str,
    pub query: Option<&'b str>,
    pub headers: &'b [httparse::Header<'b>],
    pub host: &'b [u8],
    pub content_length: u64,
    /// The client sent `Connection: close`.
    pub close: bool,
}

/// Parse the head at the start of `buf`.
pub fn parse<'b>(buf: &'b [u8], slots: &'b mut Slots<'b>, max_head: usize) -> Verdict<'b> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Verdict::Partial,
        _ => return Verdict::Fallback,
    };
    if len > max_head || req.version != Some(1) {
        return Verdict::Fallback;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else { return Verdict::Fallback };
    let (path, query) = match target.as_bytes().iter().position(|b| *b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    if method == "CONNECT" || !plain_origin_form(target.as_bytes()) || !crate::proxy::validate::valid_escapes(path) {
        return Verdict::Fallback;
    }
    let mut host = None;
    let mut hosts = 0;
    let mut content_length = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host = Some(h.value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => match (content_length, decimal(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Verdict::Fallback,
            },
            10 if name.eq_ignore_ascii_case(b"connection") => match connection_close(h.value) {
                Some(c) => close |= c,
                None => return Verdict::Fallback,
            },
            6 if name.eq_ignore_ascii_case(b"expect") => return Verdict::Fallback,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Verdict::Fallback,
            14 if name.eq_ignore_ascii_case(b"http2-settings") => return Verdict::Fallback,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Verdict::Fallback,
            _ => {}
        }
    }
    // A Host that is not `host[:port]` is refused, with its cause, by the other path.
    let Some(host) = host.filter(|h| hosts == 1 && crate::proxy::validate::valid_authority(h)) else {
        return Verdict::Fallback;
    };
    Verdict::Fast(Head {
        len,
        method,
        path,
        query,
        headers: req.headers,
        host,
        content_length: content_length.unwrap_or(0),
        close,
    })
}

/// `Connection: keep-alive` / `close` (any case, comma-separated): `Some(close)`.
/// Any other token names fields to strip, which the hyper path handles.
fn connection_close(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in value.split(|b| *b == b',') {
        let t = token.trim_ascii();
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !(t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive")) {
            return None;
        }
    }
    Some(close)
}

/// A `Content-Length` value: decimal digits only, no overflow, below the two values
/// hyper reserves.
pub fn decimal(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let n = v.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })?;
    (n <= u64::MAX - 2).then_some(n)
}

/// `/` followed by characters any URI parser takes in a path and query (RFC 3986
/// unreserved, sub-delims, `:@/?%`), within hyper's length limit.
pub fn plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.len() <= MAX_TARGET
        && target.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(bytes: &[u8]) -> &'static str {
        let mut s = slots();
        match parse(bytes, &mut s, 8192) {
            Verdict::Partial => "partial",
            Verdict::Fast(_) => "fast",
            Verdict::Fallback => "fallback",
        }
    }

    #[test]
    fn plain_requests_are_fast() {
        let mut s = slots();
        let bytes =
            b"POST /a/b?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\nabc";
        let Verdict::Fast(h) = parse(bytes, &mut s, 8192) else { panic!("not fast") };
        assert_eq!((h.method, h.path, h.query, h.host), ("POST", "/a/b", Some("x=1"), &b"shop"[..]));
        assert_eq!((h.content_length, h.close, h.len), (3, true, bytes.len() - 3));
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: a\r\n"), "partial");
    }

    #[test]
    fn everything_unusual_goes_to_the_hyper_path() {
        for bytes in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: evil@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(verdict(bytes), "fallback", "{}", String::from_utf8_lossy(bytes));
        }
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(verdict(big.as_bytes()), "fallback");
        assert_eq!(verdict(&big.as_bytes()[..8500]), "fallback", "a partial head over the limit");
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(verdict(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes()), "fallback");
    }

    #[test]
    fn lengths() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b" 42 "), Some(42));
        assert_eq!(decimal(b"18446744073709551614"), None);
        assert_eq!(decimal(b"-1"), None);
        assert_eq!(decimal(b""), None);
    }

    mod streams {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Req {
            method: &'static str,
            target: String,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        }

        fn req() -> impl Strategy<Value = Req> {
            (
                prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
                "/[a-z0-9/._-]{0,24}(\\?[a-z0-9=&]{0,12})?",
                prop::collection::vec(("x-[a-z]{1,8}", "[!-~]([ -~]{0,16}[!-~])?"), 0..6),
                prop::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(method, target, headers, body)| Req { method, target, headers, body })
        }

        fn encode(r: &Req) -> Vec<u8> {
            let mut out = format!("{} {} HTTP/1.1\r\nHost: shop.example\r\n", r.method, r.target).into_bytes();
            for (k, v) in &r.headers {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            if !r.body.is_empty() {
                out.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&r.body);
            out
        }

        proptest! {
            /// Valid requests back to back, arriving in arbitrary pieces, are each parsed
            /// once whole, with the fields they were sent with.
            #[test]
            fn valid_streams_parse_in_any_cuts(reqs in prop::collection::vec(req(), 1..6),
                                               cuts in prop::collection::vec(1usize..48, 1..64)) {
                let stream: Vec<u8> = reqs.iter().flat_map(encode).collect();
                let mut buf = Vec::new();
                let (mut fed, mut seen) = (0, 0);
                let mut cut = cuts.iter().cycle();
                while seen < reqs.len() {
                    let mut slots = slots();
                    let consumed = match parse(&buf, &mut slots, 8192) {
                        Verdict::Fast(h) => {
                            let want = &reqs[seen];
                            let (path, query) = want.target.split_once('?').map_or((want.target.as_str(), None), |(p, q)| (p, Some(q)));
                            prop_assert_eq!(h.method, want.method);
                            prop_assert_eq!((h.path, h.query), (path, query));
                            prop_assert_eq!(h.host, &b"shop.example"[..]);
                            prop_assert_eq!(h.content_length, want.body.len() as u64);
                            let whole = h.len + want.body.len();
                            (buf.len() >= whole).then_some(whole)
                        }
                        Verdict::Partial => None,
                        Verdict::Fallback => return Err(TestCaseError::fail(format!("refused {:?}", String::from_utf8_lossy(&buf)))),
                    };
                    match consumed {
                        Some(n) => {
                            prop_assert_eq!(&buf[n - reqs[seen].body.len()..n], &reqs[seen].body[..]);
                            buf.drain(..n);
                            seen += 1;
                        }
                        None => {
                            prop_assert!(fed < stream.len(), "ran out of input at request {}", seen);
                            let end = (fed + cut.next().unwrap()).min(stream.len());
                            buf.extend_from_slice(&stream[fed..end]);
                            fed = end;
                        }
                    }
                }
                prop_assert!(buf.is_empty() && fed == stream.len());
            }
        }
    }
}
