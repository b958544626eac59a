//! The access log: one JSON object per request on stdout, written by a background task.
//! The request path only does a `try_send` into a bounded queue; when stdout cannot keep
//! up, records are dropped (and counted in the log itself) rather than slowing requests.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

/// Records queued before the request path starts dropping them.
const QUEUE: usize = 65_536;

#[derive(Debug, Serialize)]
pub struct AccessRecord {
    pub ts: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub version: Arc<str>,
    pub duration_ms: f64,
    pub bytes_out: u64,
    pub client: IpAddr,
    pub request_id: String,
}

impl AccessRecord {
    /// The line for a request that has just arrived, stamped now; the rest is filled in
    /// as it goes.
    pub fn arrived(method: String, host: String, path: String, client: IpAddr) -> Self {
        AccessRecord {
            ts: crate::clock::timestamp(std::time::SystemTime::now()),
            method,
            host,
            path,
            status: 0,
            route: "".into(),
            upstream: "".into(),
            version: "".into(),
            duration_ms: 0.0,
            bytes_out: 0,
            client: client.to_canonical(),
            request_id: String::new(),
        }
    }
}

/// The log: a bounded queue and the writer task that drains it.
pub struct AccessLog {
    sink: Sink,
    rx: Mutex<Option<mpsc::Receiver<AccessRecord>>>,
}

/// The sending end: all the request path holds to log a line (a clone is one atomic
/// increment).
#[derive(Clone)]
pub struct Sink(Arc<SinkInner>);

struct SinkInner {
    tx: mpsc::Sender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl Sink {
    /// Queue a record without waiting; a full queue drops it (and counts the drop).
    pub fn send(&self, record: AccessRecord) {
        if self.0.tx.try_send(record).is_err() {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessLog {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = Sink(Arc::new(SinkInner { tx, dropped: Arc::new(AtomicU64::new(0)) }));
        AccessLog { sink, rx: Mutex::new(Some(rx)) }
    }

    /// Queue a record without waiting.
    pub fn send(&self, record: AccessRecord) {
        self.sink.send(record);
    }

    /// A sending end to keep (a response body logs its line when it ends).
    pub fn sink(&self) -> Sink {
        self.sink.clone()
    }

    /// Start the writer task (once; later calls do nothing).
    pub fn spawn_writer(&self) {
        let Some(mut rx) = self.rx.lock().expect("not poisoned").take() else {
            return;
        };
        let dropped = self.sink.0.dropped.clone();
        tokio::task::spawn_blocking(move || {
            // Not `stdout().lock()` for the writer's life: that would block every other
            // writer to stdout in the process while the log waits for records. The
            // buffer takes the lock once per flush.
            let mut out = std::io::BufWriter::new(std::io::stdout());
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(record) = next {
                    let _ = serde_json::to_writer(&mut out, &record);
                    let _ = out.write_all(b"\n");
                    next = rx.try_recv().ok();
                }
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(out, "{{\"dropped_access_log_records\":{lost}}}");
                }
                // Flush when the queue is empty: batches under load, prompt when idle.
                let _ = out.flush();
            }
        });
    }
}
