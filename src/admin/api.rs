//! The JSON control API under `/api/v1/`. Each handler validates fully before changing
//! anything, so a refused call changes nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::status::{route_status, status};
use super::{json_response, AdminResponse};
use crate::control::{Applied, ControlError};
use std::sync::Arc;

use crate::app::App;
use crate::rollout::Action;
use crate::routing::path::percent_decode;

/// Admin request bodies are small JSON documents.
pub const MAX_BODY: usize = 64 * 1024;

/// What an `/api/v1/...` path asks for, once its method has been checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    Status,
    Cluster,
    /// The charts' series: every route's, or one route's (`?route=NAME`).
    History(Option<String>),
    Weights(String),
    Promote(String),
    Rollback(String),
    Rollout(String, Action),
    Reload,
}

impl Call {
    /// Parse a path; `None` for unknown paths. Returns the call and its one allowed method.
    pub fn parse(path: &str) -> Option<(Call, http::Method)> {
        use http::Method;
        let rest = path.strip_prefix("/api/v1/")?;
        match rest {
            "status" => return Some((Call::Status, Method::GET)),
            "cluster" => return Some((Call::Cluster, Method::GET)),
            "history" => return Some((Call::History(None), Method::GET)),
            "reload" => return Some((Call::Reload, Method::POST)),
            _ => {}
        }
        let rest = rest.strip_prefix("routes/")?;
        let (name, action) = rest.split_once('/')?;
        let name = percent_decode(name)?;
        if name.is_empty() {
            return None;
        }
        match action {
            "weights" => Some((Call::Weights(name), Method::PUT)),
            "promote" => Some((Call::Promote(name), Method::POST)),
            "rollback" => Some((Call::Rollback(name), Method::POST)),
            _ => Some((Call::Rollout(name, Action::parse(action.strip_prefix("rollout/")?)?), Method::POST)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsBody {
    weights: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    upstream: String,
}

pub async fn handle(app: &Arc<App>, call: Call, body: Bytes) -> AdminResponse {
    match call {
        Call::Status => json_response(StatusCode::OK, &status(app)),
        Call::History(route) => json_response(StatusCode::OK, &history(app, route.as_deref())),
        Call::Cluster => match app.controller.fleet() {
            Some(fleet) => json_response(StatusCode::OK, &super::cluster::view(fleet).await),
            None => error(StatusCode::NOT_FOUND, "this replica is not in a fleet: its config has no [cluster]"),
        },
        Call::Weights(route) => match parse::<WeightsBody>(&body) {
            Ok(b) => changed(app, &route, app.controller.set_weights(&route, &b.weights).await),
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        Call::Promote(route) => match parse::<PromoteBody>(&body) {
            Ok(b) => changed(app, &route, app.controller.promote(&route, &b.upstream).await),
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        Call::Rollback(route) => changed(app, &route, app.controller.rollback(&route).await),
        Call::Rollout(route, action) => {
            let result = app.driver.rollout(&route, action).await.map(|()| Applied::default());
            changed(app, &route, result)
        }
        Call::Reload => match app.controller.reload().await {
            Ok(generation) => json_response(StatusCode::OK, &json!({ "generation": generation })),
            Err(errors) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": "the config file is invalid; the previous config keeps serving",
                    "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            ),
        },
    }
}

/// `GET /api/v1/history`: each route's series (only `route`'s when given).
fn history(app: &App, route: Option<&str>) -> serde_json::Value {
    let rt = app.plane.runtime();
    let telemetry = &app.plane.telemetry;
    let routes: Vec<serde_json::Value> = rt
        .table
        .routes()
        .iter()
        .filter(|r| route.is_none_or(|name| *r.name == *name))
        .map(|r| json!({ "name": &*r.name, "series": telemetry.history.route(&r.name) }))
        .collect();
    let interval = crate::telemetry::HISTORY_INTERVAL.as_secs();
    json!({
        "interval_seconds": interval,
        "window_seconds": interval * crate::telemetry::HISTORY_POINTS as u64,
        "routes": routes,
    })
}

/// The route's new state, or the error.
fn changed(app: &App, route: &str, result: Result<Applied, ControlError>) -> AdminResponse {
    match result {
        Ok(applied) => {
            let (rt, file) = app.controller.live();
            // A reload may have removed the route since the change was made.
            let Some(r) = rt.route(route) else {
                return json_response(StatusCode::OK, &json!({ "name": route, "removed_by_reload": true }));
            };
            let mut doc = serde_json::to_value(route_status(app, &file, &rt, r)).expect("serializable");
            if let Some(w) = applied.warning {
                doc["warning"] = json!(w);
            }
            json_response(StatusCode::OK, &doc)
        }
        Err(e) => error(e.status(), &e.to_string()),
    }
}

/// A query parameter's value, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(&v.replace('+', " "))).flatten()
    })
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))
}

pub fn error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn paths() {
        assert_eq!(Call::parse("/api/v1/status"), Some((Call::Status, Method::GET)));
        assert_eq!(Call::parse("/api/v1/routes/shop/weights"), Some((Call::Weights("shop".into()), Method::PUT)));
        assert_eq!(Call::parse("/api/v1/routes/a%20b/promote"), Some((Call::Promote("a b".into()), Method::POST)));
        assert_eq!(
            Call::parse("/api/v1/routes/shop/rollout/pause"),
            Some((Call::Rollout("shop".into(), Action::Pause), Method::POST))
        );
        assert_eq!(Call::parse("/api/v1/routes/shop/rollout/explode"), None);
        assert_eq!(Call::parse("/api/v1/routes//weights"), None);
        assert_eq!(Call::parse("/api/v2/status"), None);
    }
}
