//! Following a chunked body as it passes through unchanged: where it ends, whether its
//! framing is valid (RFC 9112 §7.1), and how many payload bytes it carried. The bytes
//! are relayed as they arrive (chunk extensions and trailers included), so the proxy
//! never re-encodes a body; it only refuses to forward framing it cannot follow.

/// The framing broke the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Longest chunk-size line (size, whitespace, extensions) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
    /// Payload bytes seen so far.
    pub payload: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: State::Size, size: 0, digits: 0, line: 0, trailers: 0, payload: 0 }
    }
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Follow `input`; returns how many of its bytes belong to the body (all of them,
    /// unless the body ended inside it).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return Ok(i);
            }
            if self.state == State::Data {
                let take = self.size.min((input.len() - i) as u64);
                self.size -= take;
                self.payload += take;
                i += take as usize;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), Malformed> {
        use State::*;
        if matches!(self.state, Size | SizeLws | Ext | SizeLf) {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(Malformed);
            }
        }
        self.state = match (self.state, b) {
            (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                // At most 16 digits and under 2^63, as for requests (see
                // `server::framing`): no two readers may disagree on a size.
                if self.digits == 16 || self.size >= 1 << 59 {
                    return Err(Malformed);
                }
                self.digits += 1;
                self.size = self.size << 4 | u64::from((b as char).to_digit(16).expect("hex"));
                Size
            }
            (Size, b' ' | b'\t') if self.digits > 0 => SizeLws,
            (Size | SizeLws, b';') if self.digits > 0 => Ext,
            (Size | SizeLws | Ext, b'\r') if self.digits > 0 => SizeLf,
            (SizeLws, b' ' | b'\t') => SizeLws,
            (Ext, b) if b != b'\n' => Ext,
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.digits = 0;
                self.line = 0;
                Size
            }
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerLine, b) if b != b'\n' && b != b'\r' => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(Malformed);
                }
                TrailerLine
            }
            (TrailerLine, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(Malformed),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn follow(input: &[u8]) -> Result<(usize, bool, u64), Malformed> {
        let mut c = Chunked::default();
        let n = c.feed(input)?;
        Ok((n, c.done(), c.payload))
    }

    #[test]
    fn bodies_end_where_their_framing_says() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        assert_eq!(follow(body), Ok((body.len() - 4, true, 11)));
        let trailers = b"1\r\na\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n";
        assert_eq!(follow(trailers), Ok((trailers.len(), true, 1)));
        assert_eq!(follow(b"A \r\n0123456789\r\n"), Ok((16, false, 10)));
    }

    #[test]
    fn bad_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"5\r\nhello\r\n0\r\n\n",
            b"11111111111111111\r\n",
            b"00000000000000001\r\n",
            b"ffffffffffffffff\r\n",
            b"8000000000000000\r\n",
            b";ext\r\n",
        ] {
            assert_eq!(follow(bad), Err(Malformed), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Any body cut anywhere is followed to the same end.
        #[test]
        fn cuts_do_not_matter(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
                              cuts in proptest::collection::vec(1usize..17, 1..30)) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let whole = body.len();
            body.extend_from_slice(b"GET /next");
            let mut c = Chunked::default();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while !c.done() {
                let end = (at + cut.next().unwrap()).min(body.len());
                at += c.feed(&body[at..end]).unwrap();
            }
            prop_assert_eq!(at, whole);
            prop_assert_eq!(c.payload, chunks.iter().map(|c| c.len() as u64).sum::<u64>());
        }
    }
}
