//! What a header field is to the proxy, told from its name in a few comparisons (by
//! length first), for both directions.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ends at this hop (RFC 9110 §7.6.1), or the proxy writes it itself.
    HopByHop,
    /// `TE`: hop-by-hop, but `trailers` is passed on (gRPC needs it).
    Te,
    Host,
    ContentLength,
    Via,
    Date,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Other,
}

#[inline]
pub fn kind(name: &[u8]) -> Kind {
    let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
    match name.len() {
        2 if is(b"te") => Kind::Te,
        3 if is(b"via") => Kind::Via,
        4 if is(b"host") => Kind::Host,
        4 if is(b"date") => Kind::Date,
        7 if is(b"trailer") || is(b"upgrade") => Kind::HopByHop,
        10 if is(b"connection") || is(b"keep-alive") => Kind::HopByHop,
        14 if is(b"content-length") => Kind::ContentLength,
        14 if is(b"http2-settings") => Kind::HopByHop,
        15 if is(b"x-forwarded-for") => Kind::XForwardedFor,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        16 if is(b"x-forwarded-host") => Kind::XForwardedHost,
        17 if is(b"transfer-encoding") => Kind::HopByHop,
        17 if is(b"x-forwarded-proto") => Kind::XForwardedProto,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_case() {
        assert_eq!(kind(b"Transfer-Encoding"), Kind::HopByHop);
        assert_eq!(kind(b"X-FORWARDED-PROTO"), Kind::XForwardedProto);
        assert_eq!(kind(b"te"), Kind::Te);
        assert_eq!(kind(b"Date"), Kind::Date);
        assert_eq!(kind(b"x-forwarded-fox"), Kind::Other);
        assert_eq!(kind(b"content-type"), Kind::Other);
    }
}
