//! `GET /`: a self-contained HTML status page rendered from the status document (no
//! scripts or external assets).

use std::fmt::Write;

use super::status::Status;

pub fn render(s: &Status) -> String {
    let mut h = String::with_capacity(4096);
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard</title><style>");
    h.push_str(
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}",
    );
    h.push_str("td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}.err{color:#b00}");
    h.push_str("</style></head><body><h1>switchyard</h1>");
    let _ = write!(
        h,
        "<p>config generation {} loaded {} from <code>{}</code>{}</p>",
        s.generation,
        esc(&s.loaded_at),
        esc(s.config_path.as_deref().unwrap_or("(built in)")),
        if s.draining { " &mdash; <b>draining</b>" } else { "" }
    );
    if let Some(e) = &s.last_reload_error {
        let _ = write!(h, "<p class=\"err\">last reload failed:</p><pre class=\"err\">{}</pre>", esc(e));
    }
    h.push_str("<h2>Routes</h2><table><tr><th>route</th><th>match</th><th>upstream</th><th>version</th><th>weight</th><th>share</th><th>source</th></tr>");
    for r in &s.routes {
        for (i, b) in r.backends.iter().enumerate() {
            let (name, matcher) = if i == 0 {
                let hosts = if r.hosts.is_empty() { "*".to_string() } else { r.hosts.join(", ") };
                (esc(&r.name), format!("{} {}", esc(&hosts), esc(&r.path_prefix)))
            } else {
                (String::new(), String::new())
            };
            let _ = write!(
                h,
                "<tr><td>{name}</td><td>{matcher}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{}</td></tr>",
                esc(&b.upstream),
                esc(&b.version),
                b.weight,
                b.share * 100.0,
                b.source
            );
        }
    }
    h.push_str("</table>");
    let rollouts: Vec<_> = s.routes.iter().filter_map(|r| r.rollout.as_ref().map(|ro| (r, ro))).collect();
    if !rollouts.is_empty() {
        h.push_str("<h2>Rollouts</h2><table><tr><th>route</th><th>state</th><th>step</th><th>canary share</th><th>canary requests</th><th>error rate</th><th>p99</th><th>reason</th></tr>");
        for (r, ro) in rollouts {
            let m = ro.measured.as_ref();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.name),
                ro.state,
                ro.step.map_or_else(|| "-".to_string(), |s| format!("{}/{}", s + 1, ro.steps.len())),
                ro.canary_percent.map_or_else(|| "-".to_string(), |p| format!("{p}%")),
                m.map_or(0, |m| m.canary_requests),
                m.map_or_else(|| "-".to_string(), |m| format!("{:.4}", m.canary_error_rate)),
                m.and_then(|m| m.canary_p99_ms).map_or_else(|| "-".to_string(), |p| format!("{p:.1} ms")),
                esc(&ro.reason)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Upstreams</h2><table><tr><th>upstream</th><th>version</th><th>endpoint</th><th>healthy</th><th>in flight</th></tr>");
    for u in &s.upstreams {
        for e in &u.endpoints {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.name),
                esc(&u.version),
                esc(&e.address),
                if e.healthy { "yes" } else { "no" },
                e.in_flight
            );
        }
    }
    h.push_str("</table><p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/api/v1/status\">/api/v1/status</a></p></body></html>\n");
    h
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
