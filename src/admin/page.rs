//! `GET /`: the release cockpit, one self-contained HTML page (inline style and script,
//! SVG drawn by that script; nothing loaded from elsewhere, under 100 KB).
//!
//! The server renders the current state as tables, so the page is useful without
//! JavaScript: per route its live share as a bar and its backends (version groups in
//! place of a split upstream), per rollout its step bar, each finished step's judgement
//! against the thresholds and the reason of its last transition; the last reload error
//! with each PATH:LINE:COL; endpoint health and version groups per upstream. The script
//! then takes over: it polls `/api/v1/status` every second (live shares, rates from two
//! polls' counts, time elapsed and left in a step), `/api/v1/history` every few seconds
//! (a chart per measure and route over the last ten minutes: request rate, error rate
//! and p99, one line per version on shared axes, the rollout's thresholds and
//! judgements marked) and, in a fleet, `/api/v1/cluster` (members, the decider, the
//! revision each applied). The change forms set a route's weights with a field per
//! backend and promote or roll back after a confirmation, sending the admin token given
//! in the page.

use std::fmt::Write;

use super::status::{BackendStatus, RouteStatus, Status, UpstreamStatus};
use crate::rollout::{Judgement, RolloutView, Thresholds, Verdict};

/// Line colours, in chart order (see [`lines`]); the script gets the same list.
const PALETTE: [&str; 7] = ["#2f6fbf", "#e0702a", "#2e9e5b", "#8a4fbf", "#b8860b", "#1b9aaa", "#777777"];

pub fn render(s: &Status) -> String {
    let mut h = String::with_capacity(48 * 1024);
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width\"><title>switchyard</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body><h1>switchyard</h1>");
    h.push_str("<p id=\"conn\">server-rendered; live charts and updates need JavaScript</p><div id=\"static\">");
    summary(&mut h, s);
    if let Some(e) = &s.last_reload_error {
        reload_error(&mut h, e);
    }
    for r in &s.routes {
        route(&mut h, r);
    }
    if s.source == "cluster" {
        h.push_str("<h2>Fleet</h2><p>members and the revision each applied: <a href=\"/api/v1/cluster\">/api/v1/cluster</a> (listed here with JavaScript)</p>");
    }
    upstreams(&mut h, &s.upstreams);
    h.push_str("</div><div id=\"live\" hidden></div>");
    controls(&mut h, s);
    h.push_str("<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/api/v1/status\">/api/v1/status</a> &middot; <a href=\"/api/v1/history\">/api/v1/history</a></p><script>");
    let _ = write!(h, "const PALETTE = {PALETTE:?};");
    h.push_str(SCRIPT);
    h.push_str("</script></body></html>\n");
    h
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn summary(h: &mut String, s: &Status) {
    let _ = write!(
        h,
        "<p class=\"summary\">config generation <b>{}</b> loaded {} from <code>{}</code> &middot; state from <b>{}</b>",
        s.generation,
        esc(&s.loaded_at),
        esc(s.config_path.as_deref().unwrap_or("(built in)")),
        s.source
    );
    if let Some(rev) = s.revision {
        let _ = write!(h, " (revision {rev} applied)");
    }
    match s.connected {
        Some(true) => h.push_str(" &middot; etcd connected"),
        Some(false) => h.push_str(" &middot; <b class=\"err\">etcd unreachable</b>"),
        None => {}
    }
    if s.draining {
        h.push_str(" &middot; <b>draining</b>");
    }
    h.push_str("</p>");
}

/// Each error on its own line, its PATH:LINE:COL set apart.
fn reload_error(h: &mut String, e: &str) {
    h.push_str(
        "<div class=\"box err\"><b>last reload failed</b> (the previous config keeps serving)<ul class=\"errors\">",
    );
    for line in e.lines() {
        match location_split(line) {
            Some((at, rest)) => {
                let _ = write!(h, "<li><code class=\"loc\">{}</code> {}</li>", esc(at), esc(rest));
            }
            None => {
                let _ = write!(h, "<li>{}</li>", esc(line));
            }
        }
    }
    h.push_str("</ul></div>");
}

/// `PATH:LINE:COL: message` split after the first `:LINE:COL` (a path may hold colons).
fn location_split(line: &str) -> Option<(&str, &str)> {
    line.match_indices(": ").map(|(i, _)| i).find_map(|i| {
        let mut parts = line[..i].rsplitn(3, ':');
        let (col, row) = (parts.next()?, parts.next()?);
        let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        (numeric(col) && numeric(row) && parts.next().is_some_and(|p| !p.is_empty()))
            .then(|| (&line[..i], &line[i + 2..]))
    })
}

/// A route's backends (a split upstream's version groups in its place) in chart order,
/// with their colours: the rollout's baseline, its canary, then the rest as configured.
/// The script's `linesOf` orders and colours the same way, so nothing changes colour
/// when it takes over.
fn lines(r: &RouteStatus) -> Vec<(&BackendStatus, &'static str)> {
    let rank = |b: &BackendStatus| match &r.rollout {
        Some(ro) if b.upstream == ro.baseline => 0,
        Some(ro) if b.upstream == ro.canary => 1,
        _ => 2,
    };
    let mut backends: Vec<&BackendStatus> = r.backends.iter().collect();
    backends.sort_by_key(|b| rank(b));
    backends
        .into_iter()
        .flat_map(|b| if b.groups.is_empty() { std::slice::from_ref(b) } else { &b.groups[..] })
        .zip(PALETTE.iter().cycle())
        .map(|(b, c)| (b, *c))
        .collect()
}

fn route(h: &mut String, r: &RouteStatus) {
    let hosts = if r.hosts.is_empty() { "*".to_string() } else { r.hosts.join(", ") };
    let _ = write!(
        h,
        "<section class=\"route\"><h2>{} <small>{} {}{}</small></h2>",
        esc(&r.name),
        esc(&hosts),
        esc(&r.path_prefix),
        r.sticky.map_or_else(String::new, |s| format!(" &middot; sticky by {s}"))
    );
    let lines = lines(r);
    let _ = write!(h, "<div class=\"bar\" data-route=\"{}\">", esc(&r.name));
    for (b, color) in lines.iter().filter(|(b, _)| b.share > 0.0) {
        let _ = write!(
            h,
            "<span style=\"width:{:.2}%;background:{color}\" title=\"{} {} {}\">{}</span>",
            b.share * 100.0,
            esc(&b.upstream),
            esc(&b.version),
            pct(b.share),
            if b.share >= 0.08 { format!("{:.0}%", b.share * 100.0) } else { String::new() }
        );
    }
    h.push_str("</div><table><tr><th>upstream</th><th>version</th><th>weight</th><th>share</th><th>source</th><th>requests</th><th>errors</th></tr>");
    for (b, color) in &lines {
        let _ = write!(
            h,
            "<tr><td><i class=\"key\" style=\"background:{color}\"></i>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.upstream),
            esc(&b.version),
            b.weight,
            pct(b.share),
            b.source,
            b.requests,
            b.errors
        );
    }
    h.push_str("</table>");
    if let Some(ro) = &r.rollout {
        rollout(h, &r.name, ro);
    }
    if let Some(m) = &r.mirror {
        let _ = write!(
            h,
            "<p>mirror {}% to <b>{}</b> (compare {}): {} match, {} mismatch, {} error, {} dropped; mismatch rate {}</p>",
            m.percent,
            esc(&m.upstream),
            m.compare,
            m.matched,
            m.mismatched,
            m.errors,
            m.dropped,
            m.mismatch_rate.map_or_else(|| "-".to_string(), pct)
        );
    }
    h.push_str("</section>");
}

fn rollout(h: &mut String, route: &str, ro: &RolloutView) {
    let active = matches!(ro.state, "running" | "paused");
    let _ = write!(
        h,
        "<h3>rollout <b class=\"state {0}\">{1}</b> <small>{2} (canary) against {3} (baseline), judged every {4} s</small></h3>",
        ro.state,
        ro.state.replace('_', " "),
        esc(&ro.canary),
        esc(&ro.baseline),
        ro.interval_seconds
    );
    let current = ro.step.filter(|_| active);
    let _ = write!(
        h,
        "<ol class=\"steps\" data-route=\"{}\" data-state=\"{}\" data-current=\"{}\">",
        esc(route),
        ro.state,
        current.map_or_else(String::new, |s| s.to_string())
    );
    for (i, p) in ro.steps.iter().enumerate() {
        let verdict = ro.judgements.iter().rev().find(|j| j.step == i).map(|j| verdict_name(&j.judgement.verdict));
        let class = match (current == Some(i), verdict) {
            (true, _) => " current",
            (false, Some(v)) => {
                if v == "pass" {
                    " pass"
                } else {
                    " fail"
                }
            }
            (false, None) => "",
        };
        let _ = write!(h, "<li class=\"step{class}\" data-step=\"{i}\">{p}%</li>");
    }
    let _ = write!(h, "<li class=\"step end{}\">promoted</li></ol>", if ro.state == "promoted" { " pass" } else { "" });
    if let (Some(step), Some(at)) = (current, &ro.step_started_at) {
        let _ = write!(h, "<p>step {} of {} since {}</p>", step + 1, ro.steps.len(), esc(at));
    }
    let t = &ro.thresholds;
    let limit = |v: Option<f64>, show: &dyn Fn(f64) -> String| {
        v.map_or_else(|| "not judged".to_string(), |v| format!("&le; {}", show(v)))
    };
    let _ = write!(
        h,
        "<table class=\"judgements\"><tr><th>step</th><th>canary requests <small>&ge; {}</small></th><th>canary error rate <small>&le; {}</small></th><th>canary p99 <small>{}</small></th><th>increase over baseline <small>{}</small></th><th>baseline requests, error rate</th><th>verdict</th></tr>",
        t.min_requests,
        pct(t.max_error_rate),
        limit(t.max_p99_ms, &|v| format!("{v} ms")),
        limit(t.max_error_rate_increase, &pct)
    );
    for j in &ro.judgements {
        // By its share, not a number: the reason text counts steps from 0 (as `step` does).
        let label = format!("{}% &middot; {}", j.percent, esc(&j.at));
        judgement_row(h, &label, &j.judgement, t, verdict_name(&j.judgement.verdict));
    }
    if let (Some(step), Some(m)) = (current, &ro.measured) {
        let label = format!("{}% &middot; so far", ro.steps[step]);
        judgement_row(h, &label, m, t, "measuring");
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p class=\"reason{}\" data-route=\"{}\" data-state=\"{}\">{}</p>",
        if matches!(ro.state, "rolled_back" | "aborted") { " err" } else { "" },
        esc(route),
        ro.state,
        esc(&ro.reason)
    );
}

/// One step's measurements, each cell marked when it crosses its threshold.
fn judgement_row(h: &mut String, label: &str, m: &Judgement, t: &Thresholds, verdict: &str) {
    let bad = |crossed: bool| if crossed { " class=\"bad\"" } else { "" };
    let increase = m.canary_error_rate - m.baseline_error_rate;
    // The increase is judged only against a baseline with traffic of its own (judge.rs).
    let increase_judged = m.baseline_requests >= t.min_requests.max(1);
    let _ = write!(
        h,
        "<tr><td>{label}</td><td>{}</td><td{}>{}</td><td{}>{}</td><td{}>{}</td><td>{}, {}</td><td class=\"verdict {verdict}\">{verdict}</td></tr>",
        m.canary_requests,
        bad(m.canary_error_rate > t.max_error_rate),
        pct(m.canary_error_rate),
        bad(matches!((m.canary_p99_ms, t.max_p99_ms), (Some(p), Some(max)) if p > max)),
        m.canary_p99_ms.map_or_else(|| "-".to_string(), |p| format!("{p:.1} ms")),
        bad(increase_judged && t.max_error_rate_increase.is_some_and(|max| increase > max)),
        pct(increase),
        m.baseline_requests,
        pct(m.baseline_error_rate),
    );
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Wait => "wait",
        Verdict::Fail(_) => "fail",
    }
}

fn upstreams(h: &mut String, upstreams: &[UpstreamStatus]) {
    h.push_str("<h2>Upstreams</h2><table><tr><th>upstream</th><th>version</th><th>endpoint</th><th>healthy</th><th>ejected</th><th>draining</th><th>in flight</th></tr>");
    for u in upstreams {
        for e in &u.endpoints {
            let version = u.groups.iter().find(|g| g.endpoints.contains(&e.address)).map_or(&u.version, |g| &g.version);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.name),
                esc(version),
                esc(&e.address),
                if e.healthy { "yes" } else { "<b class=\"err\">no</b>" },
                if e.ejected { "<b class=\"err\">yes</b>" } else { "no" },
                if e.draining { "yes" } else { "no" },
                e.in_flight
            );
        }
    }
    h.push_str("</table>");
    if upstreams.iter().any(|u| !u.groups.is_empty()) {
        h.push_str("<h3>Version groups</h3><table><tr><th>upstream</th><th>version</th><th>healthy endpoints</th><th>endpoints</th></tr>");
        for u in upstreams {
            for g in &u.groups {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&u.name),
                    esc(&g.version),
                    g.healthy,
                    esc(&g.endpoints.join(", "))
                );
            }
        }
        h.push_str("</table>");
    }
}

/// The change forms: a weight field per backend of the chosen route (the first one's
/// here; the script refills them), promote / rollback behind a confirmation. They need
/// the script (the API takes JSON) and the admin token when one is configured.
fn controls(h: &mut String, s: &Status) {
    let options: String = s.routes.iter().map(|r| format!("<option>{}</option>", esc(&r.name))).collect();
    let first = s.routes.first();
    h.push_str("<section id=\"change\"><h2>Change</h2><noscript><p>These forms need JavaScript; without it use <code>switchyard ctl</code> or the API.</p></noscript>");
    h.push_str("<form id=\"auth\" onsubmit=\"return false\"><label>admin token <input id=\"token\" type=\"password\" autocomplete=\"off\" placeholder=\"(none)\"></label> <small>kept in this tab's session storage</small></form>");
    let _ = write!(
        h,
        "<form id=\"weights\"><label>route <select name=\"route\">{options}</select></label> <span id=\"wfields\">"
    );
    for b in first.map_or(&[][..], |r| &r.backends[..]) {
        let _ = write!(
            h,
            "<label class=\"w\">{0} <small>{1}</small> <input type=\"number\" name=\"weight\" data-upstream=\"{0}\" min=\"0\" step=\"any\" required value=\"{2}\"></label>",
            esc(&b.upstream),
            esc(&b.version),
            b.weight
        );
    }
    h.push_str("</span><button>set weights</button></form>");
    let _ = write!(h, "<form id=\"promote\"><label>route <select name=\"route\">{options}</select></label> <label>upstream <select name=\"upstream\">");
    for b in first.map_or(&[][..], |r| &r.backends[..]) {
        let _ = write!(h, "<option>{}</option>", esc(&b.upstream));
    }
    h.push_str("</select></label> <button>promote&hellip;</button> <button type=\"button\" id=\"rollback\">roll back to the file's weights&hellip;</button></form>");
    h.push_str("<p id=\"confirm\" hidden><span id=\"confirm-what\"></span> <button type=\"button\" id=\"confirm-yes\">confirm</button> <button type=\"button\" id=\"confirm-no\">cancel</button></p><p id=\"msg\" role=\"status\"></p></section>");
}

const STYLE: &str = include_str!("page.css");

/// The live view, charts and change forms. Plain DOM and string-built SVG, no libraries.
const SCRIPT: &str = include_str!("page.js");
