"use strict";
const $ = (s) => document.querySelector(s);
const $$ = (s) => [...document.querySelectorAll(s)];
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]));
const pct = (x) => (x * 100).toFixed(2) + "%";
const ms = (x) => (x === null || x === undefined ? "-" : x.toFixed(1) + " ms");
const clock = (ts) => (ts ? ts.slice(11, 19) + " UTC" : "");
const dur = (s) => (s < 90 ? Math.round(s) + " s" : Math.floor(s / 60) + " min" + (Math.round(s % 60) ? " " + Math.round(s % 60) + " s" : ""));
const ACTIVE = ["running", "paused"];
// The last two status polls, the last history, the fleet, and the server clock's lead
// over ours (from the Date header: elapsed times in a step are the server's).
let cur = null, prev = null, hist = null, fleet = null, skew = 0;
const now = () => Date.now() + skew;

// A backend's rates between two polls (cumulative counts and latency buckets, differenced).
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

const groupsOf = (b) => (b.groups && b.groups.length ? b.groups : [b]);
// A route's versions in chart order with their colours (as the server's `lines`): the
// rollout's baseline, its canary, the rest as configured, then versions only the
// history still has (a version group that left).
function linesOf(r, series) {
  const ro = r.rollout, rank = (b) => (ro && b.upstream === ro.baseline ? 0 : ro && b.upstream === ro.canary ? 1 : 2);
  const seen = new Map();
  const add = (b, live) => { const k = b.upstream + "\u0000" + b.version; if (!seen.has(k)) seen.set(k, {upstream: b.upstream, version: b.version, live}); };
  for (const b of [...r.backends].sort((x, y) => rank(x) - rank(y))) for (const g of groupsOf(b)) add(g, g);
  for (const s of series) add(s, null);
  return [...seen.values()].map((l, i) => Object.assign(l, {
    color: PALETTE[i % PALETTE.length],
    role: !ro ? "" : l.upstream === ro.canary ? "canary" : l.upstream === ro.baseline ? "baseline" : "",
  }));
}

const CW = 330, CH = 130, PL = 44, PR = 6, PT = 6, PB = 16;
const nice = (v) => { const e = 10 ** Math.floor(Math.log10(v)); return [1, 2, 5, 10].map((m) => m * e).find((x) => x >= v * 0.9999); };
const MEASURES = [
  {key: "rps", title: "requests / s", floor: 1, fmt: (v) => String(+v.toFixed(v < 10 ? 1 : 0))},
  {key: "error_rate", title: "error rate", floor: 0.01, cap: 1, fmt: (v) => +(v * 100).toFixed(2) + "%", limit: (t) => t.max_error_rate},
  {key: "p99_ms", title: "p99 to response head", floor: 1, fmt: (v) => +v.toFixed(v < 10 ? 1 : 0) + " ms", limit: (t) => t.max_p99_ms},
];

// One measure of a route over the history's window: a line per version on shared axes,
// the rollout's threshold dashed, its judgements as vertical marks. Until the history
// holds a whole window (a proxy that just started), the chart spans what it has.
function chart(r, m, lines, series) {
  const step = (hist ? hist.interval_seconds : 2) * 1000, end = now();
  const first = Math.min(end, ...series.filter((s) => s.points.length).map((s) => s.points[0].t));
  const win = Math.min((hist ? hist.window_seconds : 600) * 1000, Math.max(10 * step, end - first + step)), start = end - win;
  const data = lines.map((l) => {
    const s = series.find((s) => s.upstream === l.upstream && s.version === l.version);
    return (s ? s.points : []).filter((p) => p.t >= start).map((p) => [p.t, p[m.key]]);
  });
  let top = m.floor;
  for (const d of data) for (const [, v] of d) if (v !== null && v > top) top = v;
  top = Math.min(nice(top), m.cap || Infinity);
  const x = (t) => (PL + ((Math.min(t, end) - start) / win) * (CW - PL - PR)).toFixed(1);
  const y = (v) => (PT + (1 - Math.min(v, top) / top) * (CH - PT - PB)).toFixed(1);
  let s = `<figure><figcaption>${m.title}</figcaption><svg viewBox="0 0 ${CW} ${CH}" role="img" aria-label="${esc(r.name)}: ${m.title}, last ${dur(win / 1000)}" data-route="${esc(r.name)}" data-measure="${m.key}">`;
  for (const f of [0, 0.5, 1]) {
    s += `<line class="grid" x1="${PL}" x2="${CW - PR}" y1="${y(top * f)}" y2="${y(top * f)}"/><text x="${PL - 4}" y="${+y(top * f) + 3}" text-anchor="end">${m.fmt(top * f)}</text>`;
  }
  s += `<text x="${PL}" y="${CH - 3}">-${dur(win / 1000)}</text><text x="${CW - PR}" y="${CH - 3}" text-anchor="end">now</text>`;
  const ro = r.rollout, limit = ro && m.limit ? m.limit(ro.thresholds) : null;
  if (limit !== null && limit <= top) s += `<line class="limit" x1="${PL}" x2="${CW - PR}" y1="${y(limit)}" y2="${y(limit)}"><title>threshold ${m.fmt(limit)}</title></line>`;
  for (const j of (ro && ro.judgements) || []) {
    const t = Date.parse(j.at);
    if (t >= start) s += `<line class="mark ${j.verdict}" x1="${x(t)}" x2="${x(t)}" y1="${PT}" y2="${CH - PB}"><title>step ${j.step + 1} (${j.percent}%): ${j.verdict}</title></line>`;
  }
  lines.forEach((l, i) => {
    let d = "", pen = "M", n = 0, last = null, peak = 0;
    for (const [t, v] of data[i]) {
      if (v === null || v === undefined) { pen = "M"; continue; }
      d += pen + x(t) + "," + y(v); pen = "L"; n++; last = [t, v]; peak = Math.max(peak, v);
    }
    s += `<path class="line" d="${d}" stroke="${l.color}" data-upstream="${esc(l.upstream)}" data-version="${esc(l.version)}" data-points="${n}" data-max="${peak}"><title>${esc(l.upstream)} ${esc(l.version)}</title></path>`;
    if (last) s += `<circle cx="${x(last[0])}" cy="${y(last[1])}" r="2.2" fill="${l.color}"/>`;
  });
  return s + "</svg></figure>";
}

function shareBar(r, lines) {
  return `<div class="bar" data-route="${esc(r.name)}">` + lines.filter((l) => l.live && l.live.share > 0).map((l) =>
    `<span style="width:${(l.live.share * 100).toFixed(2)}%;background:${l.color}" data-upstream="${esc(l.upstream)}" data-version="${esc(l.version)}" title="${esc(l.upstream)} ${esc(l.version)} ${pct(l.live.share)}">${l.live.share >= 0.08 ? Math.round(l.live.share * 100) + "%" : ""}</span>`).join("") + "</div>";
}

function judgementRow(t, label, j, verdict) {
  const bad = (c) => (c ? ' class="bad"' : "");
  const inc = j.canary_error_rate - j.baseline_error_rate, incJudged = j.baseline_requests >= Math.max(1, t.min_requests);
  return `<tr><td>${label}</td><td>${j.canary_requests}</td><td${bad(j.canary_error_rate > t.max_error_rate)}>${pct(j.canary_error_rate)}</td>`
    + `<td${bad(t.max_p99_ms !== null && j.canary_p99_ms !== null && j.canary_p99_ms > t.max_p99_ms)}>${ms(j.canary_p99_ms)}</td>`
    + `<td${bad(incJudged && t.max_error_rate_increase !== null && inc > t.max_error_rate_increase)}>${pct(inc)}</td>`
    + `<td>${j.baseline_requests}, ${pct(j.baseline_error_rate)}</td><td class="verdict ${verdict}">${verdict}</td><td>${esc(j.reason || "")}</td></tr>`;
}

function rolloutView(r) {
  const ro = r.rollout, t = ro.thresholds, active = ACTIVE.includes(ro.state), js = ro.judgements || [];
  const current = active ? ro.step : null;
  let h = `<h3>rollout <b class="state ${ro.state}">${ro.state.replace("_", " ")}</b> <small>${esc(ro.canary)} (canary) against ${esc(ro.baseline)} (baseline), judged every ${dur(ro.interval_seconds)}</small></h3>`;
  const elapsed = ro.step_started_at ? Math.max(0, (now() - Date.parse(ro.step_started_at)) / 1000) : 0;
  h += `<ol class="steps" data-route="${esc(r.name)}" data-state="${ro.state}" data-current="${current === null ? "" : current}">`;
  ro.steps.forEach((p, i) => {
    const j = js.filter((j) => j.step === i).pop();
    const cls = i === current ? " current" : j ? " " + j.verdict : "";
    const bar = i === current && ro.state === "running" ? `<span class="progress" style="width:${Math.min(100, (100 * elapsed) / ro.interval_seconds).toFixed(1)}%"></span>` : "";
    h += `<li class="step${cls}" data-step="${i}" title="step ${i + 1}: canary at ${p}%${j ? ", " + j.verdict : ""}">${p}%${bar}</li>`;
  });
  h += `<li class="step end${ro.state === "promoted" ? " pass" : ""}">promoted</li></ol>`;
  if (current !== null) {
    const left = ro.interval_seconds - elapsed, m = ro.measured;
    let when = ro.state === "paused" ? "paused" : left >= 0 ? `${dur(left)} left` : "";
    if (ro.state === "running" && left < 0) {
      const next = ro.interval_seconds - (elapsed % ro.interval_seconds);
      when = `waiting for min_requests (${m ? m.canary_requests : 0} of ${t.min_requests} canary requests), judged again in ${dur(next)}, failed after ${dur(10 * ro.interval_seconds)} without them`;
    }
    h += `<p class="timing" data-route="${esc(r.name)}">step ${current + 1} of ${ro.steps.length} (${ro.steps[current]}%): ${dur(elapsed)} in, ${when}</p>`;
  }
  const limit = (v, f) => (v === null ? "not judged" : "&le; " + f(v));
  h += `<table class="judgements" data-route="${esc(r.name)}"><tr><th>step</th><th>canary requests <small>&ge; ${t.min_requests}</small></th><th>canary error rate <small>&le; ${pct(t.max_error_rate)}</small></th>`
    + `<th>canary p99 <small>${limit(t.max_p99_ms, ms)}</small></th><th>increase over baseline <small>${limit(t.max_error_rate_increase, pct)}</small></th><th>baseline requests, error rate</th><th>verdict</th><th>reason</th></tr>`;
  for (const j of js) h += judgementRow(t, `${j.percent}% &middot; ${clock(j.at)}`, j, j.verdict);
  if (current !== null && ro.measured) h += judgementRow(t, `${ro.steps[current]}% &middot; so far`, ro.measured, "measuring");
  h += "</table>";
  const bad = ["rolled_back", "aborted"].includes(ro.state);
  return h + `<p class="reason${bad ? " err" : ""}" data-route="${esc(r.name)}" data-state="${ro.state}">${bad ? "<b>" + ro.state.replace("_", " ") + ":</b> " : ""}${esc(ro.reason)}${ro.changed_at ? ` <small>(${clock(ro.changed_at)})</small>` : ""}</p>`;
}

function routeView(r, before, secs) {
  const series = ((hist && hist.routes.find((h) => h.name === r.name)) || {series: []}).series;
  const lines = linesOf(r, series);
  let h = `<section class="route" data-route="${esc(r.name)}"><h2>${esc(r.name)} <small>${esc(r.hosts.length ? r.hosts.join(", ") : "*")} ${esc(r.path_prefix)}${r.sticky ? " &middot; sticky by " + esc(r.sticky) : ""}</small></h2>`;
  h += shareBar(r, lines);
  h += "<table><tr><th>upstream</th><th>version</th><th>weight</th><th>share</th><th>source</th><th>req/s</th><th>errors</th><th>p99</th></tr>";
  for (const l of lines) {
    if (!l.live) continue;
    const b = l.live, w = windowOf(b, before.get(r.name + "\u0000" + l.upstream + "\u0000" + l.version), secs);
    const at = `data-route="${esc(r.name)}" data-upstream="${esc(b.upstream)}"`;
    h += `<tr><td><i class="key" style="background:${l.color}"></i>${esc(b.upstream)}${l.role ? " <small>" + l.role + "</small>" : ""}</td><td>${esc(b.version)}</td><td>${b.weight}</td>`
      + `<td data-version="${esc(b.version)}" class="share" ${at}>${pct(b.share)}</td><td>${esc(b.source)}</td>`
      + `<td class="rate" ${at}>${w ? w.rate.toFixed(1) : "-"}</td>`
      + `<td class="errors" ${at}>${w && w.errors !== null ? pct(w.errors) : "-"}</td>`
      + `<td class="p99" ${at}>${w && w.p99 !== null ? w.p99.toFixed(1) + " ms" : "-"}</td></tr>`;
  }
  h += "</table>";
  h += `<div class="charts">${MEASURES.map((m) => chart(r, m, lines, series)).join("")}</div>`;
  if (r.rollout) h += rolloutView(r);
  if (r.mirror) {
    const m = r.mirror;
    h += `<p>mirror ${m.percent}% to <b>${esc(m.upstream)}</b> (compare ${esc(m.compare)}): ${m.matched} match, ${m.mismatched} mismatch, ${m.errors} error, ${m.dropped} dropped; mismatch rate ${m.mismatch_rate === null ? "-" : pct(m.mismatch_rate)}</p>`;
  }
  return h + "</section>";
}

function fleetView(d) {
  if (d.source !== "cluster") return "";
  let h = "<h2>Fleet</h2>";
  if (!fleet) return h + "<p>reading the members&hellip;</p>";
  if (fleet.error) return h + `<p class="err">${esc(fleet.error)}</p>`;
  h += `<p>this replica <b>${esc(fleet.name)}</b> &middot; decider <b class="decider">${esc(fleet.decider || "none elected")}</b> &middot; revision ${fleet.revision} applied here, latest ${fleet.latest_revision}${fleet.connected ? "" : ' &middot; <b class="err">etcd unreachable: the last list read</b>'}</p>`;
  h += '<table class="members"><tr><th>member</th><th>admin</th><th>version</th><th>revision applied</th><th>up to date</th></tr>';
  for (const m of fleet.members) {
    h += `<tr data-member="${esc(m.name)}"><td>${esc(m.name)}${m.name === fleet.decider ? " <small>decider</small>" : ""}${m.name === fleet.name ? " <small>this replica</small>" : ""}</td>`
      + `<td>${esc(m.admin)}</td><td>${esc(m.version)}</td><td>${m.revision}</td><td>${m.applied ? "yes" : '<b class="err">no</b>'}</td></tr>`;
  }
  return h + "</table>";
}

function upstreamsView(d) {
  let h = "<h2>Upstreams</h2><table><tr><th>upstream</th><th>version</th><th>endpoint</th><th>healthy</th><th>ejected</th><th>draining</th><th>in flight</th></tr>";
  for (const u of d.upstreams) for (const e of u.endpoints) {
    const g = (u.groups || []).find((g) => g.endpoints.includes(e.address));
    h += `<tr><td>${esc(u.name)}</td><td>${esc(g ? g.version : u.version)}</td><td>${esc(e.address)}</td><td>${e.healthy ? "yes" : '<b class="err">no</b>'}</td><td>${e.ejected ? '<b class="err">yes</b>' : "no"}</td><td>${e.draining ? "yes" : "no"}</td><td>${e.in_flight}</td></tr>`;
  }
  h += "</table>";
  const grouped = d.upstreams.filter((u) => u.groups && u.groups.length);
  if (grouped.length) {
    h += "<h3>Version groups</h3><table><tr><th>upstream</th><th>version</th><th>healthy endpoints</th><th>endpoints</th></tr>";
    for (const u of grouped) for (const g of u.groups) h += `<tr class="group" data-upstream="${esc(u.name)}" data-version="${esc(g.version)}"><td>${esc(u.name)}</td><td>${esc(g.version)}</td><td>${g.healthy}</td><td>${esc(g.endpoints.join(", "))}</td></tr>`;
    h += "</table>";
  }
  return h;
}

function reloadError(e) {
  return '<div class="box err"><b>last reload failed</b> (the previous config keeps serving)<ul class="errors">' + e.split("\n").map((l) => {
    const m = /^(.*?:\d+:\d+): (.*)$/.exec(l);
    return m ? `<li><code class="loc">${esc(m[1])}</code> ${esc(m[2])}</li>` : `<li>${esc(l)}</li>`;
  }).join("") + "</ul></div>";
}

function render() {
  if (!cur) return;
  const d = cur.doc, secs = prev ? (cur.at - prev.at) / 1000 : 0, before = new Map();
  if (prev) for (const r of prev.doc.routes) for (const b of r.backends) for (const g of groupsOf(b)) before.set(r.name + "\u0000" + g.upstream + "\u0000" + g.version, g);
  let h = `<p class="summary">config generation <b>${d.generation}</b> loaded ${esc(d.loaded_at)} from <code>${esc(d.config_path || "(built in)")}</code> &middot; state from <b>${esc(d.source)}</b>`
    + `${d.revision !== null ? ` (revision ${d.revision} applied)` : ""}${d.connected === false ? ' &middot; <b class="err">etcd unreachable</b>' : d.connected ? " &middot; etcd connected" : ""}${d.draining ? " &middot; <b>draining</b>" : ""}</p>`;
  if (d.last_reload_error) h += reloadError(d.last_reload_error);
  for (const r of d.routes) h += routeView(r, before, secs);
  h += fleetView(d) + upstreamsView(d);
  $("#live").innerHTML = h;
  $("#live").hidden = false;
  // The server's tables are stale now: gone, so nothing finds two of a thing.
  if ($("#static")) $("#static").remove();
  document.body.dataset.generation = d.generation;
}

// A select's options, rewritten only when the list changes (an open list stays open).
function options(sel, names) {
  if (sel.dataset.list === names.join("\u0000")) return;
  const keep = sel.value;
  sel.dataset.list = names.join("\u0000");
  sel.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
  if (names.includes(keep)) sel.value = keep;
}
function fillForms() {
  const d = cur.doc;
  for (const sel of $$("select[name=route]")) options(sel, d.routes.map((r) => r.name));
  const pick = (form) => d.routes.find((r) => r.name === form.route.value);
  const pr = pick($("#promote"));
  options($("#promote [name=upstream]"), pr ? pr.backends.map((b) => b.upstream) : []);
  // A field per backend of the chosen route, rebuilt when the route or its backends
  // change; a field the user has not edited follows the live weight.
  const wr = pick($("#weights")), box = $("#wfields");
  const key = wr ? wr.name + "\u0000" + wr.backends.map((b) => b.upstream).join("\u0000") : "";
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.innerHTML = (wr ? wr.backends : []).map((b) => `<label class="w">${esc(b.upstream)} <small>${esc(b.version)}</small> `
      + `<input type="number" name="weight" data-upstream="${esc(b.upstream)}" min="0" step="any" required value="${b.weight}"><output></output></label>`).join("");
  } else if (wr) {
    for (const i of box.querySelectorAll("input")) {
      const b = wr.backends.find((b) => b.upstream === i.dataset.upstream);
      if (b && !i.dataset.edited) { i.defaultValue = String(b.weight); i.value = String(b.weight); }
    }
  }
  shares();
}
// What share each weight field would give.
function shares() {
  const inputs = $$("#wfields input"), sum = inputs.reduce((a, i) => a + (Number(i.value) > 0 ? Number(i.value) : 0), 0);
  for (const i of inputs) i.nextElementSibling.textContent = sum > 0 && Number(i.value) >= 0 ? "= " + (100 * Number(i.value) / sum).toFixed(1) + "%" : "";
}

function authHeaders() {
  const token = $("#token").value;
  sessionStorage.setItem("switchyard-token", token);
  return token ? {authorization: "Bearer " + token} : {};
}
async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store", headers: authHeaders()});
  if (!r.ok) throw new Error(((await r.json().catch(() => ({}))).error || r.statusText) + " (HTTP " + r.status + ")");
  return r;
}
async function poll() {
  try {
    const r = await getJSON("/api/v1/status");
    const date = Date.parse(r.headers.get("date") || "");
    const lead = date - Date.now();
    // The header has whole seconds: only a clear difference is the clocks'.
    skew = Number.isFinite(lead) && Math.abs(lead) > 2000 ? lead : 0;
    prev = cur;
    cur = {at: Date.now(), doc: await r.json()};
    render();
    fillForms();
    $("#conn").textContent = "live, updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("#conn").textContent = "not live: " + e.message + (/HTTP 401/.test(e.message) ? ": enter the admin token below" : "");
  }
}
// Charts (and the fleet) every few seconds: the history has a point per interval.
async function pollSlow() {
  let next = 5;
  try {
    hist = await (await getJSON("/api/v1/history")).json();
    next = Math.min(5, Math.max(2, hist.interval_seconds));
    if (cur && cur.doc.source === "cluster") {
      try { fleet = await (await getJSON("/api/v1/cluster")).json(); } catch (e) { fleet = {error: "fleet: " + e.message}; }
    }
    render();
  } catch (e) { /* the status poll says what is wrong */ }
  setTimeout(pollSlow, next * 1000);
}

function say(text) { $("#msg").textContent = text; return false; }
async function change(method, path, body) {
  const headers = Object.assign({"content-type": "application/json"}, authHeaders());
  try {
    const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
    const j = await r.json().catch(() => ({}));
    say(r.ok ? "done" + (j.warning ? ": " + j.warning : "") : (j.error || r.statusText) + " (HTTP " + r.status + ")");
    poll();
    return r.ok;
  } catch (e) { return say("failed: " + e.message); }
}
// Promote and rollback change every backend of a route at once: they wait for a
// second click on "confirm", which says what will happen.
let pending = null;
function ask(what, action) {
  pending = action;
  $("#confirm-what").textContent = what;
  $("#confirm").hidden = false;
  say("");
  $("#confirm-yes").focus();
}
$("#confirm-yes").addEventListener("click", () => { const a = pending; pending = null; $("#confirm").hidden = true; if (a) a(); });
$("#confirm-no").addEventListener("click", () => { pending = null; $("#confirm").hidden = true; say("cancelled"); });

const routePath = (form) => "/api/v1/routes/" + encodeURIComponent(form.route.value);
$("#promote").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target, path = routePath(f), upstream = f.upstream.value;
  ask(`Promote ${upstream} on route ${f.route.value}: it gets 100%, every other backend 0.`, () => change("POST", path + "/promote", {upstream}));
});
$("#rollback").addEventListener("click", () => {
  const f = $("#promote"), path = routePath(f);
  ask(`Roll route ${f.route.value} back to the config file's weights.`, () => change("POST", path + "/rollback"));
});
$("#promote [name=route]").addEventListener("change", fillForms);
$("#weights [name=route]").addEventListener("change", fillForms);
$("#wfields").addEventListener("input", (ev) => { ev.target.dataset.edited = "1"; shares(); });
$("#weights").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const weights = {}, inputs = $$("#wfields input");
  for (const i of inputs) {
    const v = Number(i.value);
    if (i.value.trim() === "" || !(v >= 0)) return say(`the weight of ${i.dataset.upstream} must be a number, 0 or more`);
    weights[i.dataset.upstream] = v;
  }
  if (!Object.values(weights).some((v) => v > 0)) return say("at least one weight must be above 0");
  if (await change("PUT", routePath(ev.target) + "/weights", {weights})) for (const i of inputs) delete i.dataset.edited;
});
$("#token").value = sessionStorage.getItem("switchyard-token") || "";
poll();
pollSlow();
setInterval(poll, 1000);
