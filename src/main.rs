//! The `switchyard` binary: command line, logging, the tokio runtime. Everything else is
//! in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard::app::App;
use switchyard::config;
use switchyard::server::Server;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A traffic-splitting reverse proxy: canaries, blue/green, sticky sessions, per-version metrics"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a config file (reloaded live when it changes).
    Run {
        #[arg(short, long, env = "SWITCHYARD_CONFIG", default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or exit 1 printing every error as PATH:LINE:COL: field: message.
    Check {
        #[arg(short, long, env = "SWITCHYARD_CONFIG", default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Run two built-in sample upstreams and the proxy with a 90/10 canary; no config needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Talk to a running proxy's admin API.
    Ctl {
        /// The admin listener.
        #[arg(long, global = true, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// The admin API token.
        #[arg(long, global = true, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: CtlArgs,
    },
    /// The demo's sample app on its own: answers with its name and `x-version: NAME`.
    SampleUpstream {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum CtlArgs {
    /// Routes, backends, versions, weights, shares and where each weight came from.
    Status {
        /// The raw status document, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Set some backends' weights; the others keep theirs: `weights shop shop-v2=20`.
    /// With --percent the values are shares of the route's traffic and the other
    /// backends are scaled to share the rest: `weights shop --percent shop-v2=5`.
    Weights {
        route: String,
        #[arg(required = true, value_parser = switchyard::ctl::parse_weight, value_name = "UPSTREAM=WEIGHT")]
        weights: Vec<(String, f64)>,
        /// Read the values as percentages of the route's traffic.
        #[arg(long)]
        percent: bool,
    },
    /// Send all of a route's traffic to one upstream, in one swap.
    Promote { route: String, upstream: String },
    /// Back to the weights in the config file.
    Rollback { route: String },
    /// Drive a route's automated rollout.
    Rollout {
        #[arg(value_parser = ["start", "pause", "resume", "abort"])]
        action: String,
        route: String,
    },
    /// The fleet: members, the decider, and whether each applied the latest state.
    Cluster {
        /// The raw document, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Reload the config file now.
    Reload,
    /// Exit 0 when the admin listener answers `/healthz` (container health checks).
    Health,
    /// Live per-version share, request rate, errors and p99, redrawn every interval
    /// (plain frames, one after another, when not on a terminal).
    Watch {
        /// Seconds between frames (decimals allowed).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
    },
}

impl CtlArgs {
    fn into_command(self) -> switchyard::ctl::CtlCommand {
        use switchyard::ctl::CtlCommand as C;
        match self {
            CtlArgs::Status { json } => C::Status { json },
            CtlArgs::Weights { route, weights, percent } => {
                C::Weights { route, weights: weights.into_iter().collect(), percent }
            }
            CtlArgs::Promote { route, upstream } => C::Promote { route, upstream },
            CtlArgs::Rollback { route } => C::Rollback { route },
            CtlArgs::Rollout { action, route } => C::Rollout { action, route },
            CtlArgs::Cluster { json } => C::Cluster { json },
            CtlArgs::Reload => C::Reload,
            CtlArgs::Health => C::Health,
            CtlArgs::Watch { .. } => unreachable!("watch is not a single call"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config } => run(config),
        Command::Demo { listen, admin } => {
            tokio_runtime().and_then(|rt| rt.block_on(switchyard::demo::run(listen, admin, shutdown_signal())))
        }
        Command::Ctl { admin, token, command: CtlArgs::Watch { interval, count } } => tokio_runtime().and_then(|rt| {
            let redraw = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let interval = std::time::Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
            let opts = switchyard::ctl::WatchOptions { interval, count, redraw };
            rt.block_on(switchyard::ctl::watch(&admin, token.as_deref(), &opts, &mut std::io::stdout().lock()))?;
            Ok(())
        }),
        Command::Ctl { admin, token, command } => tokio_runtime().and_then(|rt| {
            let out = rt.block_on(switchyard::ctl::run(&admin, token.as_deref(), &command.into_command()))?;
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Ok(())
        }),
        Command::SampleUpstream { name, listen } => tokio_runtime().and_then(|rt| {
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                tracing::info!(%listen, %name, "sample upstream listening");
                switchyard::sample::serve(l, name, shutdown_signal()).await;
                Ok(())
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!("{}: ok ({} upstreams, {} routes)", path.display(), cfg.upstreams.len(), cfg.routes.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    // Each client and upstream connection is a file descriptor: use all the hard limit
    // allows (like nginx's worker_rlimit_nofile), so max_connections is the real cap.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let cfg = match config::load(&path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            anyhow::bail!("invalid config {}: {} error(s)", path.display(), errors.0.len());
        }
    };
    let rt = tokio_runtime()?;
    rt.block_on(async move {
        let app = App::start(cfg, Some(path)).await;
        let server = Server::bind(app).await?;
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// The main thread's runtime: admin API, reloads, health checks, DNS. Requests are
/// served by the server's own worker threads (see `switchyard::server`).
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// The log filter without `RUST_LOG`. The h2 crate warns once per offending frame (an
/// unsolicited PING ACK, say): a client could write the log for us, so its own lines
/// are errors only, and the server logs one line per connection it closes for a flood.
const DEFAULT_LOG_FILTER: &str = "info,h2=error";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
