//! The reading of one complete request head, with nothing kept between reads: where a
//! head ends, and what follows it (or why it is refused) by hyper's parsing rules.

use super::State;
use crate::proxy::ProxyError;

/// hyper's own limits, mirrored so a head it would refuse is refused here first.
const MAX_HEADERS: usize = 100;
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// End of the head (index after the blank line), searching from a little before `from`.
pub(super) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
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
pub(super) fn classify(head: &[u8]) -> Result<State, ProxyError> {
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
