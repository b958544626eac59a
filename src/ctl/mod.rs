//! `switchyard ctl`: the admin API from a terminal. Each command is one HTTP call; the
//! output is a readable table (or the raw JSON with `--json`), and an API error is a
//! clear message and exit status 1.

mod watch;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub use watch::{watch, WatchOptions};

/// One `ctl` invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum CtlCommand {
    Status {
        json: bool,
    },
    Weights {
        route: String,
        weights: BTreeMap<String, f64>,
        /// The values are percentages of the route's traffic; the other backends share
        /// the rest in their current proportions.
        percent: bool,
    },
    Promote {
        route: String,
        upstream: String,
    },
    Rollback {
        route: String,
    },
    Rollout {
        action: String,
        route: String,
    },
    /// `GET /api/v1/cluster`.
    Cluster {
        json: bool,
    },
    Reload,
    /// `GET /healthz` (for container health checks: no curl needed).
    Health,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid admin URL {0:?}: expected e.g. http://127.0.0.1:9901")]
    BadUrl(String),
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
}

/// Parse `UPSTREAM=WEIGHT` (for clap).
pub fn parse_weight(s: &str) -> Result<(String, f64), String> {
    let (name, w) = s.split_once('=').ok_or_else(|| format!("expected UPSTREAM=WEIGHT, got {s:?}"))?;
    let w: f64 = w.parse().map_err(|_| format!("weight {w:?} is not a number"))?;
    if name.is_empty() {
        return Err(format!("expected UPSTREAM=WEIGHT, got {s:?}"));
    }
    Ok((name.to_string(), w))
}

/// Weights (summing to 100) that give each backend named in `wanted` that percentage of
/// the route's traffic, the other backends sharing the rest in their current
/// proportions: `shop-v2=5` on a 99/1 route gives 95/5, however the weights were scaled.
pub fn percent_weights(
    backends: &[(String, f64)],
    wanted: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, f64>, String> {
    for (name, p) in wanted {
        if !backends.iter().any(|(b, _)| b == name) {
            let known: Vec<&str> = backends.iter().map(|(b, _)| b.as_str()).collect();
            return Err(format!("unknown upstream {name:?} (the route's backends: {})", known.join(", ")));
        }
        if !(0.0..=100.0).contains(p) {
            return Err(format!("{name}={p}: a percentage is between 0 and 100"));
        }
    }
    let named: f64 = wanted.values().sum();
    if named > 100.0 + 1e-9 {
        return Err(format!("the percentages add up to {named}, over 100"));
    }
    let rest = 100.0 - named;
    let others: f64 = backends.iter().filter(|(b, _)| !wanted.contains_key(b)).map(|(_, w)| w).sum();
    if rest > 1e-9 && others <= 0.0 {
        return Err(format!(
            "{rest}% is left for the other backends, but they all have weight 0: name their percentages too"
        ));
    }
    Ok(backends
        .iter()
        .map(|(b, w)| {
            let share = match wanted.get(b) {
                Some(p) => *p,
                None if others > 0.0 => rest * w / others,
                None => 0.0,
            };
            (b.clone(), share)
        })
        .collect())
}

/// Run a command against the admin API at `admin`; returns what to print.
pub async fn run(admin: &str, token: Option<&str>, cmd: &CtlCommand) -> Result<String, CtlError> {
    let base = admin.trim_end_matches('/');
    if !base.starts_with("http://") || base.parse::<http::Uri>().is_err() {
        return Err(CtlError::BadUrl(admin.to_string()));
    }
    let route_path = |route: &str, action: &str| format!("/api/v1/routes/{}/{action}", encode(route));
    let (method, path, body) = match cmd {
        CtlCommand::Status { .. } => (Method::GET, "/api/v1/status".to_string(), None),
        CtlCommand::Weights { route, weights, percent: true } => {
            let status = call(base, token, Method::GET, "/api/v1/status", None).await?;
            let backends = status["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == route.as_str())
                .ok_or_else(|| CtlError::Api { status: 404, message: format!("unknown route {route:?}") })?["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| (b["upstream"].as_str().unwrap_or_default().to_string(), b["weight"].as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>();
            let weights =
                percent_weights(&backends, weights).map_err(|message| CtlError::Api { status: 400, message })?;
            (Method::PUT, route_path(route, "weights"), Some(json!({ "weights": weights })))
        }
        CtlCommand::Weights { route, weights, percent: false } => {
            (Method::PUT, route_path(route, "weights"), Some(json!({ "weights": weights })))
        }
        CtlCommand::Promote { route, upstream } => {
            (Method::POST, route_path(route, "promote"), Some(json!({ "upstream": upstream })))
        }
        CtlCommand::Rollback { route } => (Method::POST, route_path(route, "rollback"), None),
        CtlCommand::Rollout { action, route } => (Method::POST, route_path(route, &format!("rollout/{action}")), None),
        CtlCommand::Cluster { .. } => (Method::GET, "/api/v1/cluster".to_string(), None),
        CtlCommand::Reload => (Method::POST, "/api/v1/reload".to_string(), None),
        CtlCommand::Health => (Method::GET, "/healthz".to_string(), None),
    };
    let doc = call(base, token, method, &path, body).await?;
    Ok(match cmd {
        CtlCommand::Status { json: true } => serde_json::to_string_pretty(&doc).unwrap_or_default(),
        CtlCommand::Status { json: false } => status_table(&doc),
        CtlCommand::Cluster { json: true } => serde_json::to_string_pretty(&doc).unwrap_or_default(),
        CtlCommand::Cluster { json: false } => cluster_table(&doc),
        CtlCommand::Reload => format!("reloaded: config generation {}", doc["generation"]),
        CtlCommand::Health => "healthy".to_string(),
        _ => {
            let mut out = format!("route {}:\n", doc["name"].as_str().unwrap_or("?"));
            out += &backends_table(&doc, false);
            if let Some(w) = doc["warning"].as_str() {
                let _ = writeln!(out, "warning: {w}");
            }
            out
        }
    })
}

pub(crate) async fn call(
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CtlError> {
    let url = format!("{base}{path}");
    let mut req = Request::builder().method(method).uri(&url).header("accept", "application/json");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(body)).map_err(|_| CtlError::BadUrl(base.to_string()))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let unreachable = |reason: String| CtlError::Unreachable { url: base.to_string(), reason };
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(format!("{e}")))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| unreachable(format!("{e}")))?.to_bytes();
    let doc: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
    if status != StatusCode::OK {
        let mut message = doc["error"].as_str().unwrap_or("request failed").trim().to_string();
        if let Some(errors) = doc["errors"].as_array() {
            for e in errors {
                let _ = write!(message, "\n  {}", e.as_str().unwrap_or_default());
            }
        }
        return Err(CtlError::Api { status: status.as_u16(), message });
    }
    Ok(doc)
}

/// `ctl cluster`: a line about the fleet, then one row per member.
fn cluster_table(doc: &Value) -> String {
    let decider = doc["decider"].as_str().unwrap_or("(none)");
    let connected = if doc["connected"].as_bool() == Some(true) { "connected" } else { "etcd UNREACHABLE" };
    let out = format!(
        "fleet as seen by {}: decider {decider}, latest revision {}, {connected}\n",
        doc["name"].as_str().unwrap_or("?"),
        doc["latest_revision"]
    );
    let mut rows =
        vec![vec!["MEMBER", "ADMIN", "VERSION", "REVISION", "APPLIED"].into_iter().map(String::from).collect()];
    for m in doc["members"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("?");
        let mark = if Some(name) == doc["decider"].as_str() { " (decider)" } else { "" };
        rows.push(vec![
            format!("{name}{mark}"),
            m["admin"].as_str().unwrap_or("").to_string(),
            m["version"].as_str().unwrap_or("").to_string(),
            m["revision"].to_string(),
            if m["applied"].as_bool() == Some(true) { "yes" } else { "no" }.to_string(),
        ]);
    }
    out + &table(&rows)
}

fn status_table(doc: &Value) -> String {
    let mut out = format!(
        "config generation {}, loaded {} from {}\n\n",
        doc["generation"],
        doc["loaded_at"].as_str().unwrap_or("?"),
        doc["config_path"].as_str().unwrap_or("(built in)")
    );
    let mut rows = vec![["ROUTE", "UPSTREAM", "VERSION", "WEIGHT", "SHARE", "SOURCE"].map(String::from).to_vec()];
    for r in doc["routes"].as_array().into_iter().flatten() {
        rows.extend(backend_rows(r, true));
    }
    out += &table(&rows);
    out.push('\n');
    out += &table(&endpoint_rows(doc));
    for r in doc["routes"].as_array().into_iter().flatten() {
        if let Some(line) = rollout_line(r) {
            let _ = write!(out, "\n{line}");
        }
        if let Some(line) = mirror_line(r) {
            let _ = write!(out, "\n{line}");
        }
    }
    if let Some(e) = doc["last_reload_error"].as_str() {
        let _ = write!(out, "\nlast reload failed (the previous config is serving):\n{e}\n");
    }
    if doc["draining"].as_bool() == Some(true) {
        out += "\ndraining: shutting down\n";
    }
    out
}

/// `rollout shop: running, step 2/5 (canary 25%); this step: canary 812 requests, error
/// rate 0.0012, p99 41.0 ms; started`
pub(crate) fn rollout_line(route: &Value) -> Option<String> {
    let r = route.get("rollout").filter(|r| !r.is_null())?;
    let steps = r["steps"].as_array().map_or(0, Vec::len);
    let mut line = format!("rollout {}: {}", route["name"].as_str().unwrap_or("?"), r["state"].as_str().unwrap_or("?"));
    if let Some(step) = r["step"].as_u64() {
        let _ = write!(line, ", step {}/{steps}", step + 1);
    }
    if let Some(p) = r["canary_percent"].as_f64() {
        let _ = write!(line, " (canary {p}%)");
    }
    let m = &r["measured"];
    if !m.is_null() {
        let p99 = m["canary_p99_ms"].as_f64().map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
        let _ = write!(
            line,
            "; canary {} requests, error rate {:.4}, p99 {p99}; baseline error rate {:.4}",
            m["canary_requests"],
            m["canary_error_rate"].as_f64().unwrap_or(0.0),
            m["baseline_error_rate"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = write!(line, "; {}", r["reason"].as_str().unwrap_or(""));
    Some(line)
}

/// `mirror shop -> shop-v3 (5%, compare status): 120 match, 3 mismatch, 0 error, 0 dropped`
pub(crate) fn mirror_line(route: &Value) -> Option<String> {
    let m = route.get("mirror").filter(|m| !m.is_null())?;
    Some(format!(
        "mirror {} -> {} ({}%, compare {}): {} match, {} mismatch, {} error, {} dropped",
        route["name"].as_str().unwrap_or("?"),
        m["upstream"].as_str().unwrap_or("?"),
        m["percent"],
        m["compare"].as_str().unwrap_or("?"),
        m["matched"],
        m["mismatched"],
        m["errors"],
        m["dropped"]
    ))
}

/// One row per endpoint: where traffic can go, and why it might not.
fn endpoint_rows(doc: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![["UPSTREAM", "ENDPOINT", "STATE", "IN FLIGHT"].map(String::from).to_vec()];
    for u in doc["upstreams"].as_array().into_iter().flatten() {
        for (i, e) in u["endpoints"].as_array().into_iter().flatten().enumerate() {
            let flag = |k: &str| e[k].as_bool() == Some(true);
            let state = if flag("draining") {
                "draining"
            } else if flag("ejected") {
                "ejected"
            } else if flag("healthy") {
                "healthy"
            } else {
                "unhealthy"
            };
            let name = if i == 0 { u["name"].as_str().unwrap_or("?").to_string() } else { String::new() };
            let address = e["address"].as_str().unwrap_or("?");
            // With version groups, which version each endpoint reports.
            let group =
                u["groups"].as_array().into_iter().flatten().find(|g| {
                    g["endpoints"].as_array().is_some_and(|eps| eps.iter().any(|a| a.as_str() == Some(address)))
                });
            let state = match group.and_then(|g| g["version"].as_str()) {
                Some(version) => format!("{state} ({version})"),
                None => state.to_string(),
            };
            rows.push(vec![name, address.to_string(), state, e["in_flight"].to_string()]);
        }
    }
    rows
}

fn backends_table(route: &Value, with_route: bool) -> String {
    let mut rows = vec![["UPSTREAM", "VERSION", "WEIGHT", "SHARE", "SOURCE"].map(String::from).to_vec()];
    rows.extend(backend_rows(route, with_route));
    table(&rows)
}

fn backend_rows(route: &Value, with_route: bool) -> Vec<Vec<String>> {
    let name = route["name"].as_str().unwrap_or("?");
    // A backend in a rolling update shows one row per version group.
    let rows = route["backends"].as_array().into_iter().flatten().flat_map(|b| {
        let groups: Vec<(&Value, bool)> = b["groups"].as_array().into_iter().flatten().map(|g| (g, true)).collect();
        if groups.is_empty() {
            vec![(b, false)]
        } else {
            groups
        }
    });
    rows.enumerate()
        .map(|(i, (b, group))| {
            let mut row = Vec::new();
            if with_route {
                row.push(if i == 0 { name.to_string() } else { String::new() });
            }
            row.push(b["upstream"].as_str().unwrap_or("?").to_string());
            let version = b["version"].as_str().unwrap_or("?");
            row.push(if group { format!("{version} (group)") } else { version.to_string() });
            row.push(number(&b["weight"]));
            row.push(format!("{:.2}%", b["share"].as_f64().unwrap_or(0.0) * 100.0));
            row.push(b["source"].as_str().unwrap_or("?").to_string());
            row
        })
        .collect()
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f}"),
        None => "?".into(),
    }
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("shop-v2=20"), Ok(("shop-v2".into(), 20.0)));
        assert_eq!(parse_weight("a=0.5"), Ok(("a".into(), 0.5)));
        assert!(parse_weight("a").is_err());
        assert!(parse_weight("=5").is_err());
        assert!(parse_weight("a=x").is_err());
    }

    #[test]
    fn status_lists_every_endpoint_with_its_state() {
        let doc = json!({
            "generation": 1, "routes": [],
            "upstreams": [
                { "name": "shop-v1", "endpoints": [
                    { "address": "10.0.0.1:80", "healthy": true, "ejected": false, "draining": false, "in_flight": 3 },
                    { "address": "10.0.0.2:80", "healthy": true, "ejected": true, "draining": false, "in_flight": 0 } ] },
                { "name": "shop-v2", "endpoints": [
                    { "address": "10.0.0.3:80", "healthy": false, "ejected": false, "draining": false, "in_flight": 0 },
                    { "address": "10.0.0.4:80", "healthy": true, "ejected": false, "draining": true, "in_flight": 1 } ] }
            ]
        });
        let text = status_table(&doc);
        assert!(text.contains("UPSTREAM  ENDPOINT     STATE      IN FLIGHT"), "{text}");
        assert!(text.contains("shop-v1   10.0.0.1:80  healthy    3"), "{text}");
        assert!(text.contains("          10.0.0.2:80  ejected    0"), "{text}");
        assert!(text.contains("shop-v2   10.0.0.3:80  unhealthy  0"), "{text}");
        assert!(text.contains("          10.0.0.4:80  draining   1"), "{text}");
    }

    #[test]
    fn percentages_scale_the_other_backends() {
        let b = |v: &[(&str, f64)]| v.iter().map(|(n, w)| (n.to_string(), *w)).collect::<Vec<_>>();
        let want = |v: &[(&str, f64)]| v.iter().map(|(n, w)| (n.to_string(), *w)).collect::<BTreeMap<_, _>>();
        // The recipe's case: v1 at 99, v2 at 1; "v2 to 50%" means 50%, not 50/149.
        let w = percent_weights(&b(&[("v1", 99.0), ("v2", 1.0)]), &want(&[("v2", 50.0)])).unwrap();
        assert_eq!(w, want(&[("v1", 50.0), ("v2", 50.0)]));
        // Three backends: the others keep their proportions (3:1).
        let w = percent_weights(&b(&[("a", 30.0), ("b", 10.0), ("c", 0.0)]), &want(&[("c", 20.0)])).unwrap();
        assert_eq!(w, want(&[("a", 60.0), ("b", 20.0), ("c", 20.0)]));
        assert!(percent_weights(&b(&[("a", 1.0)]), &want(&[("x", 5.0)])).unwrap_err().contains("unknown upstream"));
        assert!(percent_weights(&b(&[("a", 1.0), ("b", 1.0)]), &want(&[("a", 101.0)])).is_err());
        assert!(percent_weights(&b(&[("a", 0.0), ("b", 1.0)]), &want(&[("b", 10.0)]))
            .unwrap_err()
            .contains("weight 0"));
        assert_eq!(
            percent_weights(&b(&[("a", 0.0), ("b", 1.0)]), &want(&[("b", 100.0)])).unwrap(),
            want(&[("a", 0.0), ("b", 100.0)])
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "A    BB\nccc  d\n");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
