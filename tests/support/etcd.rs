//! A real etcd on loopback for the fleet tests, and a TCP gate in front of it that can
//! partition one client from it. Both use only std (processes, threads, a raw HTTP/1.0
//! health probe), so they work the same from sync tests and from any tokio runtime.
//!
//! ```ignore
//! let Some(etcd) = Etcd::start() else { return }; // skipped (or a panic under CI) without etcd
//! let gate = EtcdGate::new(etcd.port());          // one per replica: cut() partitions it alone
//! ```
//!
//! Never ports 2379/2380: a system etcd may own them (Debian's package starts one).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after a spawn.
const READY_BUDGET: Duration = Duration::from_secs(15);
/// How long a stopped etcd may take to exit.
const EXIT_BUDGET: Duration = Duration::from_secs(10);
/// Fresh port pairs tried when etcd cannot bind (another process took a port first).
const PORT_ATTEMPTS: usize = 5;

/// Runs etcd under `sh` with etcd's stdin detached and ours (a pipe) watched: when the pipe
/// closes (we dropped it in `stop`, or this test process died of a signal and no `Drop`
/// ran) the watcher SIGKILLs etcd. So a killed test binary never leaves an etcd behind.
/// The shell exits with etcd, which lets `try_wait` see an etcd that failed to start.
const SUPERVISE: &str = r#"exec 3<&0
etcd "$@" </dev/null 3<&- &
e=$!
{ read -r line <&3; kill -9 "$e"; } 2>/dev/null </dev/null &
w=$!
wait "$e"
s=$?
kill "$w" 2>/dev/null
exit "$s""#;

/// One etcd member on two free loopback ports, its data in a temporary directory, its
/// output in `etcd.log` there. Killed on drop.
pub struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// The supervising shell and the pipe whose closing kills etcd; `None` while stopped.
    child: Option<(Child, ChildStdin)>,
}

impl Etcd {
    /// Start etcd and wait until it is healthy. `None` when etcd is not installed (a
    /// line on stderr says so), except under CI (`CI` set), where that is a failure.
    pub fn start() -> Option<Etcd> {
        if !installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd is not installed but CI is set: the fleet tests must run in CI (.ci/run installs etcd-server)"
            );
            eprintln!("skipping: etcd not installed (no `etcd` on PATH; Debian: etcd-server)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("etcd-test-").tempdir().expect("a temp dir for etcd");
        let mut etcd = Etcd { dir, client_port: 0, peer_port: 0, child: None };
        let mut failures = String::new();
        for _ in 0..PORT_ATTEMPTS {
            (etcd.client_port, etcd.peer_port) = free_port_pair();
            match etcd.spawn() {
                Ok(()) => return Some(etcd),
                Err(e) => {
                    failures.push_str(&format!("ports {}/{}: {e}\n", etcd.client_port, etcd.peer_port));
                    // A half-made member remembers its peer URL: start the next try afresh.
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                }
            }
        }
        panic!("etcd did not start in {PORT_ATTEMPTS} attempts:\n{failures}");
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port (what an [`EtcdGate`] forwards to).
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The data directory, kept across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything etcd wrote to stdout and stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kill etcd (SIGKILL, an outage or a crash) and wait until it has exited. The data
    /// directory and ports are kept for [`restart`](Self::restart). Idempotent.
    pub fn stop(&mut self) {
        let Some((mut shell, pipe)) = self.child.take() else { return };
        drop(pipe); // the supervisor kills etcd and exits once etcd has
        let began = Instant::now();
        loop {
            match shell.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if began.elapsed() < EXIT_BUDGET => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = shell.kill();
                    let _ = shell.wait();
                    panic!("etcd did not exit within {EXIT_BUDGET:?} of being killed; log:\n{}", self.log());
                }
            }
        }
    }

    /// Start etcd again on the same ports and data directory, and wait until it is
    /// healthy (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("etcd did not restart on ports {}/{}: {e}", self.client_port, self.peer_port);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Spawn on this instance's ports and wait for `/health`; on failure etcd is stopped
    /// and the error carries the log's tail.
    fn spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("etcd.log opens");
        let (client, peer) = (self.url(), format!("http://127.0.0.1:{}", self.peer_port));
        let (data_dir, cluster) = (self.data_dir(), format!("default={peer}"));
        let args = [
            "--name",
            "default",
            "--data-dir",
            path_str(&data_dir),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            // 3.4's default logger (capnslog) ignores --log-level for raft's lines.
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "error",
        ];
        let mut shell = Command::new("sh")
            .args(["-c", SUPERVISE, "sh"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("etcd.log handle"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("sh did not spawn: {e}"))?;
        let pipe = shell.stdin.take().expect("a piped stdin");
        self.child = Some((shell, pipe));
        let began = Instant::now();
        loop {
            if healthy(self.client_port) {
                return Ok(());
            }
            let exited = match &mut self.child {
                Some((shell, _)) => shell.try_wait().ok().flatten(),
                None => None,
            };
            if exited.is_some() || began.elapsed() > READY_BUDGET {
                let why = match exited {
                    Some(status) => format!("etcd exited ({status})"),
                    None => format!("not healthy within {READY_BUDGET:?}"),
                };
                self.stop();
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!("{why}; end of etcd.log:\n{}", tail.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some((mut shell, pipe)) = self.child.take() {
            drop(pipe);
            // Bounded: the supervisor exits right after its SIGKILL; never panic in drop.
            let began = Instant::now();
            while matches!(shell.try_wait(), Ok(None)) && began.elapsed() < EXIT_BUDGET {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = shell.kill();
            let _ = shell.wait();
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("the temp dir's path is UTF-8")
}

fn installed() -> bool {
    Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Two distinct free loopback ports, neither 2379 nor 2380. Both listeners are held until
/// both are read, so the pair is distinct; once dropped, another process may take one
/// before etcd binds it: `start` then retries with a fresh pair.
fn free_port_pair() -> (u16, u16) {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let (p, q) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        if ![p, q].iter().any(|port| (2379..=2380).contains(port)) {
            return (p, q);
        }
    }
}

/// `GET /health` over a raw connection: true when it answers `"health":"true"`.
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    // HTTP/1.0: etcd closes after the answer; a read timeout ends it too. Bounded size.
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status_ok = answer.lines().next().is_some_and(|l| l.starts_with("HTTP/1.") && l.contains(" 200 "));
    status_ok && answer.replace(' ', "").contains(r#""health":"true""#)
}

/// A TCP forwarder in front of etcd on `127.0.0.1:0`, on std threads. `cut` closes every
/// forwarded connection at once and then accepts and immediately drops new ones (the
/// client sees its connection end, not a hang); `heal` forwards again. Stopped on drop.
pub struct EtcdGate {
    addr: SocketAddr,
    shared: Arc<GateShared>,
    acceptor: Option<JoinHandle<()>>,
}

/// At most this many live forwarded connections (two threads each); beyond, new ones are
/// dropped as if cut.
const GATE_MAX_CONNECTIONS: usize = 256;

struct GateShared {
    target: SocketAddr,
    stopped: AtomicBool,
    /// The cut flag lives under the same lock as the connection list, so a connection
    /// being set up while `cut` runs is either closed by it or refused after it.
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    cut: bool,
    next_id: u64,
    /// Clones of both sockets of each live forwarded connection, by id.
    live: Vec<(u64, TcpStream, TcpStream)>,
}

impl EtcdGate {
    /// A gate forwarding to `127.0.0.1:target_port`, open.
    pub fn new(target_port: u16) -> EtcdGate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(GateShared {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            stopped: AtomicBool::new(false),
            state: Mutex::new(GateState::default()),
        });
        let for_acceptor = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("etcd-gate-{}", addr.port()))
            .spawn(move || accept_loop(listener, for_acceptor))
            .expect("the gate's thread starts");
        EtcdGate { addr, shared, acceptor: Some(acceptor) }
    }

    /// `http://127.0.0.1:PORT` of the gate: give this to the client to partition.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every live forwarded connection now, and refuse new ones until `heal`.
    pub fn cut(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.cut = true;
        for (_, client, server) in state.live.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Forward new connections again.
    pub fn heal(&self) {
        self.shared.state.lock().unwrap().cut = false;
    }

    /// How many connections are being forwarded right now.
    pub fn live_connections(&self) -> usize {
        self.shared.state.lock().unwrap().live.len()
    }
}

impl Drop for EtcdGate {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the acceptor from its blocking accept; it sees `stopped` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<GateShared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.state.lock().unwrap().cut {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        // Connecting is bounded; an etcd that is down refuses at once on loopback.
        let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(1)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let id = {
            let mut state = shared.state.lock().unwrap();
            if state.cut || state.live.len() >= GATE_MAX_CONNECTIONS {
                let _ = (client.shutdown(Shutdown::Both), server.shutdown(Shutdown::Both));
                continue;
            }
            let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else { continue };
            state.next_id += 1;
            let id = state.next_id;
            state.live.push((id, c, s));
            id
        };
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            forget(&shared, id);
            continue;
        };
        let (up, down) = (shared.clone(), shared.clone());
        let _ = std::thread::Builder::new().spawn(move || pipe(client, server, id, &up));
        let _ = std::thread::Builder::new().spawn(move || pipe(server2, client2, id, &down));
    }
}

/// Copy `from` → `to` until either side ends; then close both, so the opposite direction's
/// thread ends too, and forget the connection.
fn pipe(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &GateShared) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = (from.shutdown(Shutdown::Both), to.shutdown(Shutdown::Both));
    forget(shared, id);
}

fn forget(shared: &GateShared, id: u64) {
    shared.state.lock().unwrap().live.retain(|(i, _, _)| *i != id);
}
