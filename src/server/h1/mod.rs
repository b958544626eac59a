//! The HTTP/1.1 request path, built for speed (as Pingora did, beyond hyper): one task
//! per client connection owns the socket, one read buffer and one deadline; each head
//! is parsed once, in place, with httparse; the upstream head is written by copying the
//! client's lines minus hop-by-hop ones and splicing in the forwarding fields; upstream
//! connections come from a per-worker pool the request's own task drives (no channel,
//! no lock, no connection task); bodies stream through as they arrive.
//!
//! It serves the common case: an HTTP/1.1 request in origin-form with a Content-Length
//! (or no) body, on a route whose upstreams speak plain HTTP/1.1 and that mirrors
//! nothing. Everything else (HTTP/2, upgrades, chunked or `Expect` request bodies,
//! mirrors, TLS or h2 upstreams, anything malformed) goes to the hyper path with the
//! bytes read so far, for the rest of the connection: those requests are answered
//! exactly as before, and hostile input meets one set of rules.

mod answer;
mod attempt;
mod chunked;
mod conn;
mod date;
mod exchange;
mod field;
mod forward;
pub(super) mod head;
mod lines;
pub mod pool;
mod relay;
mod response;

pub(super) use conn::{serve, Worker};
