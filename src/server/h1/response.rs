//! An upstream's response head, parsed in place, its framing (RFC 9112 §6.3), and the
//! head the client gets: the upstream's lines minus hop-by-hop ones, with `Via`, the
//! version header, the request id and a sticky cookie spliced in.

use std::mem::MaybeUninit;

use super::head::decimal;

/// Response header lines accepted from an upstream (hyper's client accepts 100).
pub const MAX_HEADERS: usize = 100;
/// The largest response head accepted from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;

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
/// a HEAD (no body follows whatever the head says).
pub fn parse<'b>(buf: &'b [u8], slots: &'b mut Slots<'b>, head_request: bool) -> Parsed<'b> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Bad,
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else { return Parsed::Bad };
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = version == 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (length, decimal(h.value)) {
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
        (Some(_), Some(_)) | (Some(false), None) => return Parsed::Bad,
        _ if head_request || (100..200).contains(&status) || status == 204 || status == 304 => Framing::None,
        (Some(true), None) => Framing::Chunked,
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

/// Fields that end at this hop (RFC 9110 §7.6.1), or that the proxy writes itself.
pub fn hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Names listed in the head's `Connection` fields (to strip as hop-by-hop).
pub fn connection_names<'b>(headers: &'b [httparse::Header<'b>]) -> impl Iterator<Item = &'b [u8]> + Clone + 'b {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What the proxy adds to the client's response head.
pub struct Extras<'a> {
    pub via: &'a [u8],
    pub version: Option<(&'a [u8], &'a [u8])>,
    pub request_id: (&'a [u8], &'a [u8]),
    pub set_cookie: Option<&'a [u8]>,
    pub close: bool,
}

/// Write the client's response head for `resp` into `out`.
pub fn write_client_head(out: &mut Vec<u8>, resp: &Head<'_>, x: &Extras<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    let reason = match resp.reason {
        "" => http::StatusCode::from_u16(resp.status).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
        r => r,
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = connection_names(resp.headers);
    let has_named = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection"));
    let mut via: Option<usize> = None;
    let mut dated = false;
    let mut length_written = false;
    for h in resp.headers {
        let name = h.name.as_bytes();
        if hop_by_hop(name) || is(name, x.request_id.0) || x.version.is_some_and(|(n, _)| is(name, n)) {
            continue;
        }
        if has_named && named.clone().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Duplicates (equal, or the head was refused) are sent once.
            if length_written {
                continue;
            }
            length_written = true;
        } else if name.eq_ignore_ascii_case(b"via") {
            // Folded into one line with ours, below.
            via.get_or_insert(out.len());
            continue;
        } else if name.eq_ignore_ascii_case(b"date") {
            dated = true;
        }
        line(out, name, h.value);
    }
    if resp.framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"via: ");
    if via.is_some() {
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

pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
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
        match parse(bytes, &mut s, head_request) {
            Parsed::Head(h) => Some((h.framing, h.keep_alive)),
            _ => None,
        }
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
            b"HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(framing(bad, false), Option::None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_client_head_loses_hop_by_hop_fields_and_gains_ours() {
        let bytes = b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nVia: 1.0 cdn\r\nX-Version: fake\r\nContent-Length: 2\r\nX-Kept: 1\r\nDate: D\r\n\r\n";
        let mut s = slots();
        let Parsed::Head(h) = parse(bytes, &mut s, false) else { panic!() };
        let mut out = Vec::new();
        let x = Extras {
            via: b"1.1 switchyard",
            version: Some((b"x-version", b"v2")),
            request_id: (b"x-request-id", b"abc"),
            set_cookie: Some(b"sy=1"),
            close: false,
        };
        write_client_head(&mut out, &h, &x);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 1\r\nDate: D\r\nvia: 1.0 cdn, 1.1 switchyard\r\nx-version: v2\r\n\
             x-request-id: abc\r\nset-cookie: sy=1\r\n\r\n"
        );
    }
}
