//! Worker identity, at the bottom of the layers: which worker thread this is, and how
//! many there are. The server starts the workers and names them; upstream pools (one
//! per worker, so a worker never shares a connection or a lock) and the snapshot
//! builder read it. Knowing it needs nothing from either.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number: 1..=workers on worker threads, 0 elsewhere (admin,
/// health checks, tests). Upstream endpoints keep one connection pool per number.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Name this thread worker `id` (the server, as it starts a worker thread).
pub fn set_current(id: usize) {
    WORKER.with(|w| w.set(id));
}

/// `workers = 0` means one per core.
pub fn count(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}
