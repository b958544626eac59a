//! An upstream's response head, parsed in place, its framing (RFC 9112 §6.3), and the
//! head the client gets: the upstream's lines minus hop-by-hop ones, with `Via`, the
//! version header, the request id and a sticky cookie spliced in.

use std::mem::MaybeUninit;

use super::field::{kind, Kind};
use super::head::decimal;
use super::lines::{line, Lines};

/// Response header lines accepted from an upstream (hyper's client accepts 100).
pub const MAX_HEADERS: usize = 100;

pub type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

pub struct Head<'b> {
    pub len: usize,
    pub status: u16,
    pub reason: &'b str,
    pub headers: &'b [httparse::Header<'b>],
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

pub enum Parsed<'b> {
    Partial,
    Head(Head<'b>),
    /// Unparseable, too large, or framed ambiguously: never forwarded.
    Bad,
}

/// Parse the response head at the start of `buf`; `head_request` says the request was
/// a HEAD (no body follows whatever the head says). A head still unfinished past
/// `max_head` bytes (`max_header_bytes`) is `Bad`.
pub fn parse<'b>(buf: &'b [u8], slots: &'b mut Slots<'b>, head_request: bool, max_head: usize) -> Parsed<'b> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        _ => return Parsed::Bad,
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else { return Parsed::Bad };
    if status < 100 {
        return Parsed::Bad;
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = version == 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (length, length_list(h.value)) {
                (None, Some(n)) => length = Some(n),
                (Some(l), Some(n)) if l == n => {}
                _ => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked.is_some() {
                return Parsed::Bad;
            }
            // Only `chunked` is relayed; another coding could not be passed on as sent.
            chunked = Some(h.value.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in h.value.split(|b| *b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if version == 0 && t.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => return Parsed::Bad,
        _ if head_request || (100..200).contains(&status) || status == 204 || status == 304 => Framing::None,
        (Some(true), None) => Framing::Chunked,
        // Another coding could not be passed on as sent.
        (Some(false), None) => return Parsed::Bad,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    Parsed::Head(Head {
        len,
        status,
        reason: resp.reason.unwrap_or(""),
        headers: resp.headers,
        framing,
        keep_alive: !close && framing != Framing::Close,
    })
}

/// A `Content-Length` value, or a list of equal ones (`5, 5`, as hyper's client takes).
fn length_list(value: &[u8]) -> Option<u64> {
    let mut parts = value.split(|b| *b == b',').map(decimal);
    let first = parts.next()??;
    parts.all(|n| n == Some(first)).then_some(first)
}

/// The field names a head's `Connection` fields list (hop-by-hop too), without the
/// `keep-alive` and `close` options that name nothing to strip.
pub struct Named<'b> {
    names: [&'b [u8]; 8],
    len: usize,
    /// More than fit: every field is checked against the fields themselves.
    overflow: bool,
}

impl<'b> Named<'b> {
    pub fn of(headers: &'b [httparse::Header<'b>]) -> Self {
        let mut named = Named { names: [&[]; 8], len: 0, overflow: false };
        let tokens = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii);
        for t in tokens {
            if t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close") {
                continue;
            }
            if named.len == named.names.len() {
                named.overflow = true;
                break;
            }
            named.names[named.len] = t;
            named.len += 1;
        }
        named
    }

    pub fn contains(&self, name: &[u8], headers: &[httparse::Header<'_>]) -> bool {
        if self.overflow {
            return headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .flat_map(|h| h.value.split(|b| *b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name));
        }
        self.names[..self.len].iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// What the proxy adds to the client's response head.
pub struct Extras<'a> {
    pub via: &'a [u8],
    pub version: Option<(&'a [u8], &'a [u8])>,
    pub request_id: (&'a [u8], &'a [u8]),
    pub set_cookie: Option<&'a [u8]>,
    pub close: bool,
}

/// Write the client's response head for `resp` (parsed from `src`) into `out`.
pub fn write_client_head(out: &mut Vec<u8>, src: &[u8], resp: &Head<'_>, x: &Extras<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    let reason = match resp.reason {
        "" => http::StatusCode::from_u16(resp.status).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
        r => r,
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = Named::of(resp.headers);
    let mut via = false;
    let mut dated = false;
    let mut length_written = false;
    let mut lines = Lines::new(src);
    for h in resp.headers {
        let name = h.name.as_bytes();
        match kind(name) {
            Kind::HopByHop | Kind::Te => continue,
            // Never on a 204 (RFC 9110 §8.6); duplicates (equal, or the head was
            // refused) are sent once; and never dropped because `Connection` names it:
            // the client needs it to find the end of the body.
            Kind::ContentLength if length_written || resp.status == 204 => continue,
            Kind::ContentLength => length_written = true,
            // Folded into one line with ours, below.
            Kind::Via => {
                via = true;
                continue;
            }
            kind => {
                if is(name, x.request_id.0) || x.version.is_some_and(|(n, _)| is(name, n)) {
                    continue;
                }
                if named.len > 0 && named.contains(name, resp.headers) {
                    continue;
                }
                dated |= kind == Kind::Date;
            }
        }
        lines.keep(out, h);
    }
    lines.flush(out);
    // A body read to the upstream's close goes to the client chunked: the connection
    // stays open, and a body cut short stays visibly cut short.
    if matches!(resp.framing, Framing::Chunked | Framing::Close) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"via: ");
    if via {
        for h in resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("via")) {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(x.via);
    out.extend_from_slice(b"\r\n");
    if let Some((name, value)) = x.version {
        line(out, name, value);
    }
    line(out, x.request_id.0, x.request_id.1);
    if let Some(cookie) = x.set_cookie {
        line(out, b"set-cookie", cookie);
    }
    if !dated {
        line(out, b"date", &super::date::now());
    }
    if x.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn is(name: &[u8], want: &[u8]) -> bool {
    name.eq_ignore_ascii_case(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(bytes: &[u8], head_request: bool) -> Option<(Framing, bool)> {
        let mut s = slots();
        match parse(bytes, &mut s, head_request, 65_536) {
            Parsed::Head(h) => Some((h.framing, h.keep_alive)),
            _ => None,
        }
    }

    #[test]
    fn heads_over_the_limit_are_bad_whole_or_unfinished() {
        let head = format!("HTTP/1.1 200 OK\r\nx: {}\r\ncontent-length: 0\r\n\r\n", "a".repeat(9000));
        let mut s = slots();
        assert!(matches!(parse(head.as_bytes(), &mut s, false, 8192), Parsed::Bad));
        let mut s = slots();
        assert!(matches!(parse(&head.as_bytes()[..8500], &mut s, false, 8192), Parsed::Bad));
        let mut s = slots();
        assert!(matches!(parse(head.as_bytes(), &mut s, false, 16_384), Parsed::Head(_)));
        let mut s = slots();
        assert!(matches!(parse(head.as_bytes(), &mut s, false, head.len()), Parsed::Head(_)), "exactly the limit");
        let mut s = slots();
        assert!(matches!(parse(head.as_bytes(), &mut s, false, head.len() - 1), Parsed::Bad));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use Framing::*;
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Some((Length(5), true)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Some((None, true)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), Some((Chunked, true)));
        assert_eq!(framing(b"HTTP/1.1 204 No Content\r\n\r\n", false), Some((None, true)));
        assert_eq!(framing(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), Some((None, true)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n", false), Some((Close, false)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false), Some((Length(5), true)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true), Some((None, true)));
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false),
            Some((Length(0), false))
        );
        assert_eq!(framing(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false), Some((Length(0), false)));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 099 Odd\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(framing(bad, false), Option::None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_client_head_loses_hop_by_hop_fields_and_gains_ours() {
        let bytes = b"HTTP/1.1 200 OK\r\nConnection: x-hop, content-length\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nVia: 1.0 cdn\r\nX-Version: fake\r\nContent-Length: 2\r\nX-Kept: 1\r\nDate: D\r\n\r\n";
        let mut s = slots();
        let Parsed::Head(h) = parse(bytes, &mut s, false, 65_536) else { panic!() };
        let mut out = Vec::new();
        let x = Extras {
            via: b"1.1 switchyard",
            version: Some((b"x-version", b"v2")),
            request_id: (b"x-request-id", b"abc"),
            set_cookie: Some(b"sy=1"),
            close: false,
        };
        write_client_head(&mut out, bytes, &h, &x);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 1\r\nDate: D\r\nvia: 1.0 cdn, 1.1 switchyard\r\nx-version: v2\r\n\
             x-request-id: abc\r\nset-cookie: sy=1\r\n\r\n"
        );
    }
}
