//! Each worker's idle upstream connections, per endpoint: owned by the worker's thread
//! (no lock, no channel, no connection task), reused last-in first-out (the warmest
//! connection, and the rest age out), and never passed over for a new connect.
//!
//! An endpoint removed by a reload or a DNS change drains as before: requests already
//! on it finish and check their connection back in; the worker's sweep closes the idle
//! connections of endpoints no snapshot holds any more, and of any idle too long.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::upstream::Endpoint;

/// How long an idle upstream connection is kept (as hyper's pool did).
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Room for a response head and the start of its body (nginx's `proxy_buffer_size` is
/// one page too). A large body grows the buffer while it streams; the pool gets it back
/// at this size.
pub const BUFFER: usize = 4 * 1024;

/// A connection to one endpoint, with its read buffer.
pub struct UpConn {
    pub stream: TcpStream,
    /// Bytes read from the upstream and not yet relayed.
    pub buf: Vec<u8>,
    /// Taken from the pool (it served a request before): a failure before any byte of
    /// the response may just be the upstream having closed it while idle.
    pub reused: bool,
    idle_since: Instant,
}

struct Slot {
    endpoint: Weak<Endpoint>,
    idle: Vec<UpConn>,
}

thread_local! {
    static IDLE: RefCell<FxHashMap<usize, Slot>> = RefCell::default();
}

fn key(endpoint: &Arc<Endpoint>) -> usize {
    Arc::as_ptr(endpoint) as usize
}

/// The most recently used idle connection to `endpoint` that is still open and quiet:
/// one the upstream has closed, or sent bytes on while idle (a late body, a 408), is
/// closed instead, so no byte it sent can be read as the next request's response.
pub fn checkout(endpoint: &Arc<Endpoint>, now: Instant) -> Option<UpConn> {
    IDLE.with_borrow_mut(|pools| {
        let slot = pools.get_mut(&key(endpoint))?;
        if !std::ptr::eq(slot.endpoint.as_ptr(), Arc::as_ptr(endpoint)) || slot.endpoint.strong_count() == 0 {
            slot.idle.clear();
            return None;
        }
        while let Some(mut conn) = slot.idle.pop() {
            if now.saturating_duration_since(conn.idle_since) < IDLE_FOR && conn.quiet() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    })
}

/// Put a connection whose last exchange ended cleanly back for reuse.
pub fn checkin(endpoint: &Arc<Endpoint>, mut conn: UpConn, now: Instant) {
    conn.idle_since = now;
    conn.buf.clear();
    conn.buf.shrink_to(BUFFER);
    IDLE.with_borrow_mut(|pools| {
        let slot =
            pools.entry(key(endpoint)).or_insert_with(|| Slot { endpoint: Arc::downgrade(endpoint), idle: Vec::new() });
        if !std::ptr::eq(slot.endpoint.as_ptr(), Arc::as_ptr(endpoint)) {
            // An endpoint that died left its slot to a new one at the same address.
            *slot = Slot { endpoint: Arc::downgrade(endpoint), idle: Vec::new() };
        }
        slot.idle.push(conn);
    });
}

/// A new connection to `endpoint`, within its `connect_timeout`.
pub async fn connect(endpoint: &Endpoint) -> io::Result<UpConn> {
    let timeout = endpoint.transport.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect_timeout")),
    };
    stream.set_nodelay(true)?;
    Ok(UpConn { stream, buf: Vec::with_capacity(BUFFER), reused: false, idle_since: Instant::now() })
}

/// Close what is no longer wanted: connections idle too long, and every connection of
/// an endpoint that is gone. Run by each worker now and then.
pub fn sweep(now: Instant) {
    IDLE.with_borrow_mut(|pools| {
        pools.retain(|_, slot| {
            slot.idle.retain(|c| now.saturating_duration_since(c.idle_since) < IDLE_FOR);
            slot.endpoint.strong_count() > 0 && !slot.idle.is_empty()
        });
    });
}

impl UpConn {
    /// Open, with nothing to read. The event loop's readiness says so without a system
    /// call in the usual case (tokio clears it after a short read, and the response's
    /// last read is one); when it says readable, a non-blocking read tells EOF or
    /// stray bytes (not quiet) from a stale readiness (quiet).
    fn quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}
