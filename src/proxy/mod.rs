//! The request path: from a client request to an upstream response (or a response the
//! proxy makes itself).

pub mod activity;
pub mod body;
pub mod error;
pub(crate) mod forward;
pub mod headers;
mod plane;
mod service;
pub mod upgrade;
pub mod validate;

pub use activity::{ActiveRequest, Activity, Expired, Observed};
pub use body::ResponseBody;
pub use body::{body_ended, body_failed};
pub use error::{Blame, ProxyError, CLIENT_CLOSED, ERROR_HEADER};
pub use plane::Plane;
pub use service::{handle, request_id_hex, ConnInfo};
