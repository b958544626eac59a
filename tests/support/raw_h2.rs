//! Raw HTTP/2 frames, for what a well-behaved client never sends: build them, flood a
//! connection with one, and read back what the server sent until it closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
/// The ACK flag of SETTINGS and PING.
pub const ACK: u8 = 0x1;

/// One HTTP/2 frame: length, type, flags, stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET for `/` on stream 1 (HPACK: `:method GET`, `:scheme https`, `:path /`, and
/// `:authority` as a literal).
pub fn get_request(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x84, 0x41, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    frame(HEADERS, 0x5, 1, &block)
}

/// A frame the server sent.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn is(&self, kind: u8, flags: u8) -> bool {
        self.kind == kind && self.flags & flags == flags
    }
}

/// The frames in `bytes` (a server sends no preface); a partial last frame is left out.
pub fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        out.push(Frame { kind: bytes[3], flags: bytes[4], stream, payload: bytes[9..9 + len].to_vec() });
        bytes = &bytes[9 + len..];
    }
    out
}

/// Everything read until the peer closed (`true`) or `budget` passed (`false`).
pub async fn read_until_closed<R: AsyncRead + Unpin>(mut r: R, budget: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(budget, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                // A TLS peer that closes without close_notify is an error: closed too.
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

/// What came of a flood.
pub struct Flooded {
    /// What the server sent.
    pub frames: Vec<Frame>,
    /// The server closed the connection.
    pub closed: bool,
    /// Copies of the frame the client got to write before the connection failed.
    pub sent: usize,
}

/// Open an HTTP/2 connection on `stream` (preface, empty SETTINGS) and send `one`
/// `copies` times, reading what the server answers until it closes (20 s at most).
pub async fn flood<S>(stream: S, one: Vec<u8>, copies: usize) -> Flooded
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut start = PREFACE.to_vec();
        start.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
        if write.write_all(&start).await.is_err() {
            return 0;
        }
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 100).collect();
        let mut sent = 0;
        while sent < copies {
            let n = (copies - sent).min(100);
            if write.write_all(&batch[..n * one.len()]).await.is_err() || write.flush().await.is_err() {
                break;
            }
            sent += n;
        }
        sent
    });
    let (bytes, closed) = read_until_closed(read, Duration::from_secs(20)).await;
    let sent = writer.await.unwrap();
    Flooded { frames: frames(&bytes), closed, sent }
}
