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
//! The path of one request: load the live [`snapshot::Runtime`] (one
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
//! Each module names only modules in layers below its own; `.ci/layers` holds the same
//! map and fails CI when a `use crate::` points sideways or up.
//!
//! ```text
//! L0   body, workers, tls, clock, sample, auth   nothing of the crate
//! L1   config        reader owns the decode helpers; file, route, tls, delivery use it
//!      access_log    JSON lines written off the request path
//! L2   telemetry     counters, histograms, the Prometheus recorder
//!      transform     header transforms, compiled and applied
//! L3   upstream      pools, selection, health, DNS lookup: no snapshot, no request path
//! L4   mirror        shadow copies and their comparison
//! L5   routing       route table, path normalization, splits, sticky keys
//! L6   control       admin weights, rollout phase, the state file's format
//! L7   cluster       a fleet's state, members, tallies and election in etcd
//! L8   snapshot      Runtime with typed Settings; compile (public, synchronous); Store
//! L9   state         Controller: the writer lock, reload, weights, DNS, persisting
//! L10  rollout       Driver over the Controller (judge.rs is pure)
//! L11  proxy         the request path: Plane = Store + counters + access log
//! L12  app           App = Plane + Controller + Driver, wired
//! L13  reload, ctl   file watching and SIGHUP; the admin API's terminal client
//! L14  admin         the admin listener
//! L15  server        workers, listeners, both HTTP/1.1 paths, hyper for the rest
//! L16  demo          (and main.rs)
//! ```
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the file format: decode with spans, validate, every error as PATH:LINE:COL |
//! | [`snapshot`] | compile a validated config (plus admin weights) into the immutable Runtime the request path reads; the Store it lives in |
//! | [`state`] | the Controller: the one writer of snapshots (reloads, admin weights, DNS), the state file |
//! | [`cluster`] | fleets: the routing state, members, tallies and the decider's election in etcd |
//! | [`control`] | admin weight overrides and rollout progress as data, the state file's format |
//! | [`app`] | one proxy's parts wired: the request path's Plane, the Controller, the rollout Driver |
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
//! | [`clock`] | the coarse process clock and the timestamp format |
//! | [`auth`] | upstream identity: AWS SigV4 signing, Google ID tokens |
//! | [`tls`] | certificates and keys: server configs (SNI, OCSP), upstream client configs |
//! | [`transform`] | request and response header transforms (`set`, `add`, `remove`) |
//! | [`sample`], [`demo`] | the built-in sample app and `switchyard demo` |

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod mirror;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod sample;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod transform;
pub mod upstream;
pub mod workers;
