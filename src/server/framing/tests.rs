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
