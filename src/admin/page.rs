//! `GET /`: one self-contained HTML status page (no external assets). The server
//! renders the current state, so the page is useful without JavaScript; an inline
//! script then polls `/api/v1/status` every second and redraws it live with per-version
//! request rate, error rate and p99 over the last poll interval (the status document's
//! cumulative counts and latency buckets, differenced), and offers promote / rollback /
//! weights forms that send the admin token given in the page.

use std::fmt::Write;

use super::status::Status;

pub fn render(s: &Status) -> String {
    let mut h = String::with_capacity(4096);
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard</title><style>");
    h.push_str(
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}",
    );
    h.push_str("td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}.err{color:#b00}");
    h.push_str("form{margin:.3em 0}input,select,button{font:inherit;margin-right:.4em}#msg{font-weight:bold}");
    h.push_str("</style></head><body><h1>switchyard</h1><div id=\"static\">");
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
    h.push_str("</table></div><div id=\"live\" hidden></div>");
    h.push_str(CONTROLS);
    h.push_str("<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/api/v1/status\">/api/v1/status</a></p>");
    h.push_str("<script>");
    h.push_str(SCRIPT);
    h.push_str("</script></body></html>\n");
    h
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The change forms (they need the admin token when one is configured).
const CONTROLS: &str = r##"<h2>Change</h2>
<form id="auth" onsubmit="return false"><label>admin token <input id="token" type="password" autocomplete="off" placeholder="(none)"></label></form>
<form id="promote"><select name="route"></select><select name="upstream"></select><button>promote</button> <button type="button" id="rollback">rollback to file weights</button></form>
<form id="weights"><select name="route"></select><input name="weights" placeholder="UPSTREAM=WEIGHT ..." size="30"><button>set weights</button></form>
<p id="msg"></p>"##;

/// Live updates and the change forms. Plain DOM, no libraries.
const SCRIPT: &str = r###"
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]));
let prev = null, doc = null;
function windowOf(b, p, secs) {
  if (!p || secs <= 0) return null;
  const n = b.requests - p.requests, e = b.errors - p.errors;
  const old = new Map(p.latency_ms_buckets.map(([ms, c]) => [ms, c]));
  const diff = b.latency_ms_buckets.map(([ms, c]) => [ms, c - (old.get(ms) || 0)]).filter(([, c]) => c > 0);
  const total = diff.reduce((a, [, c]) => a + c, 0);
  let p99 = null, seen = 0;
  const rank = Math.max(1, Math.ceil(0.99 * total));
  for (const [ms, c] of diff) { seen += c; if (seen >= rank) { p99 = ms; break; } }
  return {rate: n / secs, errors: n > 0 ? e / n : null, p99};
}
function render(now) {
  const secs = prev ? (now.at - prev.at) / 1000 : 0;
  const before = new Map();
  // A backend in a rolling update shows one row per version group.
  const rows = (r) => r.backends.flatMap((b) => (b.groups && b.groups.length ? b.groups : [b]));
  const key = (r, b) => r.name + "\u0000" + b.upstream + "\u0000" + b.version;
  if (prev) for (const r of prev.doc.routes) for (const b of rows(r)) before.set(key(r, b), b);
  let h = `<p>config generation ${now.doc.generation} loaded ${esc(now.doc.loaded_at)}${now.doc.draining ? " &mdash; <b>draining</b>" : ""} &middot; live</p>`;
  if (now.doc.last_reload_error) h += `<p class="err">last reload failed:</p><pre class="err">${esc(now.doc.last_reload_error)}</pre>`;
  h += "<h2>Routes</h2><table><tr><th>route</th><th>upstream</th><th>version</th><th>weight</th><th>share</th><th>source</th><th>req/s</th><th>errors</th><th>p99</th></tr>";
  for (const r of now.doc.routes) rows(r).forEach((b, i) => {
    const w = windowOf(b, before.get(key(r, b)), secs);
    const at = `data-route="${esc(r.name)}" data-upstream="${esc(b.upstream)}"`;
    h += `<tr><td>${i ? "" : esc(r.name)}</td><td>${esc(b.upstream)}</td><td>${esc(b.version)}</td><td>${b.weight}</td>`
      + `<td class="share" ${at}>${(b.share * 100).toFixed(2)}%</td><td>${esc(b.source)}</td>`
      + `<td class="rate" ${at}>${w ? w.rate.toFixed(1) : "-"}</td>`
      + `<td class="errors" ${at}>${w && w.errors !== null ? (w.errors * 100).toFixed(2) + "%" : "-"}</td>`
      + `<td class="p99" ${at}>${w && w.p99 !== null ? w.p99.toFixed(1) + " ms" : "-"}</td></tr>`;
  });
  h += "</table>";
  const rollouts = now.doc.routes.filter((r) => r.rollout);
  if (rollouts.length) {
    h += "<h2>Rollouts</h2><table><tr><th>route</th><th>state</th><th>step</th><th>canary share</th><th>canary requests</th><th>error rate</th><th>p99</th><th>reason</th></tr>";
    for (const r of rollouts) {
      const ro = r.rollout, m = ro.measured;
      h += `<tr><td>${esc(r.name)}</td><td class="rollout-state" data-route="${esc(r.name)}">${esc(ro.state)}</td>`
        + `<td>${ro.step === null ? "-" : (ro.step + 1) + "/" + ro.steps.length}</td><td>${ro.canary_percent === null ? "-" : ro.canary_percent + "%"}</td>`
        + `<td>${m ? m.canary_requests : "-"}</td><td>${m ? m.canary_error_rate.toFixed(4) : "-"}</td>`
        + `<td>${m && m.canary_p99_ms !== null ? m.canary_p99_ms.toFixed(1) + " ms" : "-"}</td><td>${esc(ro.reason)}</td></tr>`;
    }
    h += "</table>";
  }
  const mirrors = now.doc.routes.filter((r) => r.mirror);
  if (mirrors.length) {
    h += "<h2>Mirrors</h2><table><tr><th>route</th><th>mirror</th><th>percent</th><th>compare</th><th>match</th><th>mismatch</th><th>error</th><th>dropped</th><th>mismatch rate</th></tr>";
    for (const r of mirrors) {
      const m = r.mirror;
      h += `<tr><td>${esc(r.name)}</td><td>${esc(m.upstream)}</td><td>${m.percent}%</td><td>${esc(m.compare)}</td><td>${m.matched}</td><td>${m.mismatched}</td><td>${m.errors}</td><td>${m.dropped}</td><td>${m.mismatch_rate === null ? "-" : (m.mismatch_rate * 100).toFixed(2) + "%"}</td></tr>`;
    }
    h += "</table>";
  }
  h += "<h2>Upstreams</h2><table><tr><th>upstream</th><th>version</th><th>endpoint</th><th>healthy</th><th>ejected</th><th>draining</th><th>in flight</th></tr>";
  for (const u of now.doc.upstreams) for (const e of u.endpoints) {
    const g = (u.groups || []).find((g) => g.endpoints.includes(e.address));
    h += `<tr><td>${esc(u.name)}</td><td>${esc(g ? g.version : u.version)}</td><td>${esc(e.address)}</td><td>${e.healthy ? "yes" : "<b class=err>no</b>"}</td><td>${e.ejected ? "yes" : "no"}</td><td>${e.draining ? "yes" : "no"}</td><td>${e.in_flight}</td></tr>`;
  }
  h += "</table>";
  $("#live").innerHTML = h;
  $("#live").hidden = false;
  $("#static").hidden = true;
  document.body.dataset.generation = now.doc.generation;
}
function fillForms() {
  for (const sel of document.querySelectorAll("select[name=route]")) {
    const keep = sel.value;
    sel.innerHTML = doc.routes.map((r) => `<option>${esc(r.name)}</option>`).join("");
    if (keep) sel.value = keep;
  }
  const route = doc.routes.find((r) => r.name === $("#promote [name=route]").value) || doc.routes[0];
  const up = $("#promote [name=upstream]"), keep = up.value;
  up.innerHTML = route ? route.backends.map((b) => `<option>${esc(b.upstream)}</option>`).join("") : "";
  if (keep) up.value = keep;
  // The weights field shows the chosen route's own backends and live weights.
  const wf = $("#weights"), wroute = doc.routes.find((r) => r.name === wf.route.value) || doc.routes[0];
  if (wroute) wf.weights.placeholder = wroute.backends.map((b) => `${b.upstream}=${b.weight}`).join(" ");
}
async function poll() {
  try {
    const r = await fetch("/api/v1/status", {cache: "no-store", headers: authHeaders()});
    if (r.ok) {
      doc = await r.json();
      const now = {at: Date.now(), doc};
      render(now);
      fillForms();
      prev = now;
    }
  } catch (e) { /* the proxy may be restarting: try again next tick */ }
}
function authHeaders() {
  const token = $("#token").value;
  sessionStorage.setItem("switchyard-token", token);
  return token ? {authorization: "Bearer " + token} : {};
}
async function change(method, path, body) {
  const headers = Object.assign({"content-type": "application/json"}, authHeaders());
  const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  const j = await r.json().catch(() => ({}));
  $("#msg").textContent = r.ok ? "done" : (j.error || r.statusText) + " (HTTP " + r.status + ")";
  poll();
}
const routePath = (form) => "/api/v1/routes/" + encodeURIComponent(form.route.value);
$("#promote").addEventListener("submit", (ev) => { ev.preventDefault(); const f = ev.target; change("POST", routePath(f) + "/promote", {upstream: f.upstream.value}); });
$("#rollback").addEventListener("click", () => change("POST", routePath($("#promote")) + "/rollback"));
$("#promote [name=route]").addEventListener("change", () => { $("#promote [name=upstream]").value = ""; fillForms(); });
$("#weights [name=route]").addEventListener("change", fillForms);
$("#weights").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target, weights = {};
  for (const pair of f.weights.value.split(/[\s,]+/).filter(Boolean)) { const [k, v] = pair.split("="); weights[k] = Number(v); }
  change("PUT", routePath(f) + "/weights", {weights});
});
$("#token").value = sessionStorage.getItem("switchyard-token") || "";
poll();
setInterval(poll, 1000);
"###;
