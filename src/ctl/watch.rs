//! `switchyard ctl watch`: a live view of every route's versions: share, request rate,
//! error rate and p99 over the last interval, rollout and mirror lines. The status
//! document carries cumulative per-backend counts and latency buckets; each frame is the
//! difference between two polls, so the numbers are the last interval's, not averages
//! since start. A sparkline per version draws its request rate over the last ten
//! minutes (`GET /api/v1/history`, the status page's series). On a terminal the frame
//! redraws in place; otherwise (a pipe, a log) frames are printed one after another as
//! plain text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use super::{call, mirror_line, rollout_line, table, CtlError};

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub interval: Duration,
    /// Stop after this many frames (`None`: until interrupted).
    pub count: Option<u64>,
    /// Redraw in place (clear the screen before each frame).
    pub redraw: bool,
}

/// Poll the admin API and print a frame every `interval`.
pub async fn watch(admin: &str, token: Option<&str>, opts: &WatchOptions, out: &mut dyn Write) -> Result<(), CtlError> {
    let base = admin.trim_end_matches('/');
    let mut previous: Option<(Instant, Value)> = None;
    let mut frames = 0u64;
    loop {
        let doc = call(base, token, Method::GET, "/api/v1/status", None).await?;
        // An older proxy without history: frames without sparklines.
        let history = call(base, token, Method::GET, "/api/v1/history", None).await.unwrap_or(Value::Null);
        let now = Instant::now();
        let mut frame = render(&doc, previous.as_ref().map(|(at, prev)| (now.duration_since(*at), prev)));
        frame += &sparklines(&history);
        let written = if opts.redraw { write!(out, "\x1b[H\x1b[2J{frame}") } else { writeln!(out, "{frame}") };
        // A closed pipe (`ctl watch | head`) ends the watch quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        previous = Some((now, doc));
        frames += 1;
        if opts.count.is_some_and(|c| frames >= c) {
            return Ok(());
        }
        tokio::time::sleep(opts.interval).await;
    }
}

/// One frame: a table of every route's backends, then rollout and mirror lines.
fn render(doc: &Value, previous: Option<(Duration, &Value)>) -> String {
    let mut out = format!(
        "switchyard: config generation {}{}\n\n",
        doc["generation"],
        if doc["draining"].as_bool() == Some(true) { " (draining)" } else { "" }
    );
    // Keyed by version too: the version groups of one upstream share its name.
    let key = |r: &Value, b: &Value| (name(r), name_of(b, "upstream"), name_of(b, "version"));
    let before: HashMap<(String, String, String), &Value> = previous
        .into_iter()
        .flat_map(|(_, prev)| routes(prev))
        .flat_map(|r| backends(r).map(move |b| (key(r, b), b)))
        .collect();
    let elapsed = previous.map(|(d, _)| d.as_secs_f64());
    let mut rows = vec![["ROUTE", "UPSTREAM", "VERSION", "SHARE", "REQ/S", "ERRORS", "P99"].map(String::from).to_vec()];
    for r in routes(doc) {
        for (i, b) in backends(r).enumerate() {
            let window = elapsed.zip(before.get(&key(r, b))).map(|(secs, prev)| Window::between(prev, b, secs));
            rows.push(vec![
                if i == 0 { name(r) } else { String::new() },
                name_of(b, "upstream"),
                name_of(b, "version"),
                format!("{:.2}%", b["share"].as_f64().unwrap_or(0.0) * 100.0),
                window.as_ref().map_or_else(|| "-".into(), |w| format!("{:.1}", w.rate)),
                window.as_ref().and_then(|w| w.error_rate).map_or_else(|| "-".into(), |e| format!("{:.2}%", e * 100.0)),
                window.as_ref().and_then(|w| w.p99_ms).map_or_else(|| "-".into(), |p| format!("{p:.1} ms")),
            ]);
        }
    }
    out += &table(&rows);
    for r in routes(doc) {
        for line in [rollout_line(r), mirror_line(r)].into_iter().flatten() {
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(e) = doc["last_reload_error"].as_str() {
        let _ = writeln!(out, "last reload failed (the previous config is serving):\n{e}");
    }
    out
}

/// One line per version: its request rate over the history's window as a sparkline,
/// scaled to the route's busiest version, and the latest rate.
fn sparklines(history: &Value) -> String {
    let mut rows = Vec::new();
    for r in history["routes"].as_array().into_iter().flatten() {
        let series: Vec<&Value> = r["series"].as_array().into_iter().flatten().collect();
        let rates = |s: &Value| -> Vec<f64> {
            s["points"].as_array().into_iter().flatten().map(|p| p["rps"].as_f64().unwrap_or(0.0)).collect()
        };
        let top = series.iter().flat_map(|s| rates(s)).fold(0.0, f64::max);
        for (i, s) in series.iter().enumerate() {
            let rates = rates(s);
            let last = rates.last().map_or_else(|| "-".into(), |r| format!("{r:.1}/s"));
            rows.push(vec![
                if i == 0 { name(r) } else { String::new() },
                name_of(s, "upstream"),
                name_of(s, "version"),
                sparkline(&rates, top, 60),
                last,
            ]);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let interval = history["interval_seconds"].as_u64().unwrap_or(0);
    let window = history["window_seconds"].as_u64().unwrap_or(0) / 60;
    format!("\nrequest rate, last {window} min ({interval} s a bar when it fits):\n{}", table(&rows))
}

/// The last `width` values as bars `▁`..`█` relative to `top` (a space for nothing).
fn sparkline(values: &[f64], top: f64, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let start = values.len().saturating_sub(width);
    values[start..]
        .iter()
        .map(|v| match *v {
            v if v <= 0.0 || top <= 0.0 => ' ',
            v => BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

fn routes(doc: &Value) -> impl Iterator<Item = &Value> {
    doc["routes"].as_array().into_iter().flatten()
}

/// Each backend, or during a rolling update its version groups (one line per version).
fn backends(route: &Value) -> impl Iterator<Item = &Value> {
    route["backends"].as_array().into_iter().flatten().flat_map(|b| match b["groups"].as_array() {
        Some(groups) if !groups.is_empty() => groups.iter().collect::<Vec<_>>(),
        _ => vec![b],
    })
}

fn name(route: &Value) -> String {
    name_of(route, "name")
}

fn name_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("?").to_string()
}

/// One backend over one interval.
#[derive(Debug, PartialEq)]
struct Window {
    rate: f64,
    /// `None` without requests.
    error_rate: Option<f64>,
    /// The upper bound of the bucket holding the 99th percentile; `None` without requests.
    p99_ms: Option<f64>,
}

impl Window {
    fn between(before: &Value, now: &Value, secs: f64) -> Window {
        let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let requests = count(now, "requests").saturating_sub(count(before, "requests"));
        let errors = count(now, "errors").saturating_sub(count(before, "errors"));
        let buckets = |v: &Value| -> Vec<(f64, u64)> {
            v["latency_ms_buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_u64()?)))
                .collect()
        };
        let old: HashMap<u64, u64> = buckets(before).into_iter().map(|(ms, n)| (ms.to_bits(), n)).collect();
        let diff: Vec<(f64, u64)> = buckets(now)
            .into_iter()
            .map(|(ms, n)| (ms, n.saturating_sub(old.get(&ms.to_bits()).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        Window {
            rate: if secs > 0.0 { requests as f64 / secs } else { 0.0 },
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            p99_ms: quantile(&diff, 0.99),
        }
    }
}

/// The upper bound of the bucket holding quantile `q` of (upper ms, count) buckets.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    buckets
        .iter()
        .find(|(_, n)| {
            seen += n;
            seen >= rank
        })
        .map(|(ms, _)| *ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_window_is_the_difference_between_two_polls() {
        let before = json!({ "requests": 100, "errors": 1, "latency_ms_buckets": [[1.0, 90], [10.0, 10]] });
        let now =
            json!({ "requests": 300, "errors": 11, "latency_ms_buckets": [[1.0, 190], [10.0, 100], [500.0, 10]] });
        let w = Window::between(&before, &now, 2.0);
        assert_eq!(w.rate, 100.0);
        assert_eq!(w.error_rate, Some(0.05));
        // 200 in the window: 100 at <=1 ms, 90 at <=10 ms, 10 at <=500 ms: p99 is in the last.
        assert_eq!(w.p99_ms, Some(500.0));
        let idle = Window::between(&now, &now, 1.0);
        assert_eq!((idle.rate, idle.error_rate, idle.p99_ms), (0.0, None, None));
    }

    #[test]
    fn frames_show_dashes_until_there_is_a_window() {
        let doc = json!({ "generation": 3, "routes": [{ "name": "shop", "backends": [
            { "upstream": "shop-v1", "version": "v1", "share": 0.9, "requests": 10, "errors": 0, "latency_ms_buckets": [[1.0, 10]] }
        ]}]});
        let first = render(&doc, None);
        assert!(first.contains("switchyard: config generation 3"), "{first}");
        assert!(first.contains("shop-v1") && first.contains("90.00%") && first.contains(" -"), "{first}");
        let later = render(&doc, Some((Duration::from_secs(1), &doc)));
        assert!(later.contains("0.0"), "{later}");
    }

    #[test]
    fn sparklines_scale_every_version_to_the_busiest() {
        assert_eq!(sparkline(&[0.0, 1.0, 4.0, 8.0], 8.0, 10), " ▂▅█");
        assert_eq!(sparkline(&[8.0, 8.0, 8.0], 8.0, 2), "██");
        let history = json!({ "interval_seconds": 2, "window_seconds": 600, "routes": [{ "name": "shop", "series": [
            { "upstream": "shop-v1", "version": "v1", "points": [{ "t": 1, "rps": 10.0 }, { "t": 2, "rps": 20.0 }] },
            { "upstream": "shop-v2", "version": "v2", "points": [{ "t": 1, "rps": 0.0 }, { "t": 2, "rps": 5.0 }] }
        ]}]});
        let out = sparklines(&history);
        assert!(out.contains("shop-v1") && out.contains("▅█") && out.contains("20.0/s"), "{out}");
        assert!(out.contains(" ▃") && out.contains("5.0/s"), "{out}");
    }
}
