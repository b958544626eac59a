//! `switchyard demo`: two sample upstreams (v1 "blue", v2 "green") on loopback and the
//! proxy in front of them with a 90/10 sticky canary, no config file needed.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config;
use crate::sample;
use crate::server::Server;

/// The demo's config, with the sample upstreams' addresses filled in.
pub fn demo_config(listen: SocketAddr, admin: SocketAddr, blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        r#"# switchyard demo: a 90/10 sticky canary between two built-in sample apps.
[server]
listen = ["{listen}"]
drain_timeout = "5s"

[admin]
listen = "{admin}"

[upstreams.blue]
version = "v1"
endpoints = ["{blue}"]

[upstreams.green]
version = "v2"
endpoints = ["{green}"]

[[routes]]
name = "demo"
path_prefix = "/"
backends = [ {{ upstream = "blue", weight = 90 }}, {{ upstream = "green", weight = 10 }} ]
sticky = {{ cookie = "sy_demo", ttl = "1h" }}
overrides = [ {{ header = "x-canary", value = "always", upstream = "green" }} ]
version_header = "x-served-version"
"#
    )
}

/// Run the demo until `shutdown` resolves.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let blue_l = TcpListener::bind(loopback).await?;
    let green_l = TcpListener::bind(loopback).await?;
    let (blue, green) = (blue_l.local_addr()?, green_l.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (l, name) in [(blue_l, "blue"), (green_l, "green")] {
        let mut stop = stop_rx.clone();
        tokio::spawn(sample::serve(l, name.to_string(), async move {
            let _ = stop.changed().await;
        }));
    }

    let text = demo_config(listen, admin, blue, green);
    let cfg = config::parse(Path::new("<demo>"), &text).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let app = App::start(cfg, None).await;
    let server = Server::bind(app).await?;
    let (proxy, admin) = (server.local_addrs()[0], server.admin_addr());
    let ctl = format!("{} ctl --admin http://{admin}", self_command());
    println!(
        "\nswitchyard demo is running.\n\
         \n  proxy    http://{proxy}/   (route \"demo\": 90% blue v1 at {blue}, 10% green v2 at {green})\
         \n  admin    http://{admin}/   (status page, /metrics, /api/v1/status)\
         \n\nTry it:\
         \n  curl -si http://{proxy}/ | grep -i -e x-served-version -e set-cookie   # your version and sticky cookie\
         \n  for i in $(seq 100); do curl -s http://{proxy}/; done | sort | uniq -c      # ~90 blue, ~10 green\
         \n  curl -s -c /tmp/jar -b /tmp/jar http://{proxy}/                             # the same version every time\
         \n  curl -s -H 'x-canary: always' http://{proxy}/                               # testers: always green\
         \n  {ctl} promote demo green      # everyone to green, one swap\
         \n  {ctl} rollback demo           # back to 90/10\
         \n  {ctl} watch                   # live per-version rate, errors, p99\
         \n  curl -s http://{admin}/metrics | grep switchyard_requests_total\
         \n\nThe config it runs:\n\n{text}\nCtrl-C stops it.\n"
    );
    server.run(shutdown).await;
    let _ = stop_tx.send(true);
    Ok(())
}

/// How to run this executable from wherever the user is: `switchyard` when that name on
/// `PATH` is this very file (after `cargo install --path .`), else its full path (after
/// `cargo run`, nothing put it on `PATH`), quoted for the shell when it needs to be.
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else { return "switchyard".into() };
    let exe = exe.canonicalize().unwrap_or(exe);
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .filter_map(|dir| dir.join("switchyard").canonicalize().ok())
            .next()
            .is_some_and(|found| found == exe)
    });
    if on_path {
        return "switchyard".into();
    }
    let path = exe.display().to_string();
    if path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b)) {
        path
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}
