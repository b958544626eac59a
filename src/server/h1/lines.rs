//! Copying the header lines a head keeps from the buffer it was parsed from: runs of
//! consecutive kept lines go out as one copy of their raw bytes, so a head passes
//! through at memcpy speed however many fields it has.

use httparse::Header;

pub struct Lines<'a> {
    src: &'a [u8],
    /// The run of raw bytes not yet copied.
    run: Option<(usize, usize)>,
}

impl<'a> Lines<'a> {
    /// Lines of heads parsed from `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Lines { src, run: None }
    }

    /// Copy `h` (a field parsed from `src`), after any other kept lines.
    pub fn keep(&mut self, out: &mut Vec<u8>, h: &Header<'_>) {
        match self.span(h) {
            Some((start, end)) => match &mut self.run {
                Some((_, run_end)) if *run_end == start => *run_end = end,
                _ => {
                    self.flush(out);
                    self.run = Some((start, end));
                }
            },
            None => {
                self.flush(out);
                line(out, h.name.as_bytes(), h.value);
            }
        }
    }

    /// Copy what is kept so far (before writing anything else to `out`).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((start, end)) = self.run.take() {
            out.extend_from_slice(&self.src[start..end]);
        }
    }

    /// Where `h`'s line is in `src`, ending in CRLF; `None` when it cannot be copied
    /// raw (an empty value, a bare LF), and is written field by field instead.
    fn span(&self, h: &Header<'_>) -> Option<(usize, usize)> {
        let base = self.src.as_ptr() as usize;
        let start = (h.name.as_ptr() as usize).checked_sub(base)?;
        if h.value.is_empty() {
            return None;
        }
        let mut end = (h.value.as_ptr() as usize).checked_sub(base)? + h.value.len();
        while matches!(self.src.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        (self.src.get(end..end + 2)? == b"\r\n" && start < end).then_some((start, end + 2))
    }
}

/// Write one field line.
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_lines_are_copied_as_sent() {
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nB:2  \r\nDrop: x\r\nC: \r\nD: 4\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        let mut out = Vec::new();
        let mut lines = Lines::new(head);
        for h in req.headers.iter().filter(|h| h.name != "Drop") {
            lines.keep(&mut out, h);
        }
        lines.flush(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "A: 1\r\nB:2  \r\nC: \r\nD: 4\r\n");
    }
}
