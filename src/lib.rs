//! Switchyard: a traffic-splitting reverse proxy (the data plane for canaries,
//! blue/green cutovers and rolling updates).
//!
//! # Architecture
//!
//! ```text
//! config file ──parse──▶ FileConfig ──validate+compile──▶ Runtime (immutable) ──ArcSwap──▶ request path
//!    ▲  notify / SIGHUP                                        │                       │
//!    └─ reload: build a new Runtime beside the old; on error keep the old           └─ load once per request
//! ```
//!
//! HTTP/1.1 requests take a purpose-built path (`server::h1`): one task per client
//! connection parses each head once, in place, routes on borrowed bytes, writes the
//! upstream head by copying the client's lines, and drives an upstream connection from
//! this worker's pool itself. Everything else (HTTP/2, upgrades, mirrors, chunked or
//! `Expect` request bodies, TLS or h2 upstreams, malformed heads) goes to hyper and
//! [`proxy::handle`], with the same rules and accounting.
//!
//! The path of one request: load the live [`runtime::Runtime`] (one
//! atomic load), normalize the path, find the route ([`routing::RoutingTable::find`]:
//! host, headers, longest segment-aware prefix), pick a backend (overrides, then the
//! sticky key's rendezvous hash, else the precompiled split: one atomic add), pick an
//! available endpoint of that upstream (least in-flight of two random), rewrite the head
//! (hop-by-hop headers out, forwarding headers in), send it on this worker's pooled
//! connection to that endpoint (retrying elsewhere when it provably never arrived), and
//! count the outcome on metric handles resolved at compile time. Nothing on that path
//! locks, parses config or builds a metric label.
//!
//! # Layers
//!
//! Each module names only modules below it; `.ci/layers` fails CI when two modules
//! name each other (and keeps the list of cycles still being taken apart).
//!
//! ```text
//! L0  body, workers, tls, telemetry, access_log, sample   (nothing of the crate below them)
//! L1  config            reader owns the decode helpers; file, route, tls, delivery use it
//! L2  upstream          pools, selection, health, DNS lookup: no snapshot, no request path
//! L3  mirror, routing
//! L4  snapshot, control the compiled Runtime; admin weights and the state file
//! L5  compile, runtime, rollout   config + weights -> Runtime; Shared (the one ArcSwap
//!                       and the writer lock); the rollout driver, still a set of
//!                       Shared methods (runtime <-> rollout; see .ci/layers)
//! L6  proxy, admin, reload
//! L7  server            workers, listeners, both HTTP/1.1 paths, hyper for the rest
//! L8  demo, main
//! ```
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the file format: decode with spans, validate, every error as PATH:LINE:COL |
//! | `compile` | a validated config (plus admin weights) → the route table and pools |
//! | [`snapshot`] | the compiled, immutable Runtime the request path reads |
//! | [`runtime`] | the compiled snapshot, the long-lived shared state, the swap |
//! | [`control`] | weight changes made at runtime (admin API), their persistence |
//! | [`routing`] | route lookup, path normalization, the weighted split |
//! | [`upstream`] | endpoints and their per-worker pools, endpoint choice, health, DNS, draining |
//! | [`mirror`] | shadow traffic: sampling, the bounded copy, comparison with the primary |
//! | [`proxy`] | the request path: validation, forwarding, retries, upgrades, proxy-made errors |
//! | [`server`] | workers, listeners, the HTTP/1.1 fast path, hyper for HTTP/2 and the rest, framing tracker, the protocol ALPN agreed, HTTP/2 control-frame budgets, timeouts, graceful drain |
//! | [`reload`] | file watching, debounce, SIGHUP |
//! | [`rollout`] | automated rollouts: steps, judging, rollback, promotion |
//! | [`admin`] | the admin listener: control API, auth, status page, `/metrics`, probes |
//! | [`ctl`] | `switchyard ctl`, the admin API from a terminal |
//! | [`telemetry`] | Prometheus recorder and pre-resolved metric handles |
//! | [`access_log`] | JSON access log written off the request path |
//! | [`body`] | the request body sent upstream, and how a client's body fails |
//! | [`workers`] | which worker thread this is, and how many there are |
//! | [`sample`], [`demo`] | the built-in sample app and `switchyard demo` |

pub mod access_log;
pub mod admin;
pub mod body;
mod compile;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod mirror;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub mod sample;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;
