//! The request path: from a client request to an upstream response (or a response the
//! proxy makes itself).

pub mod body;
pub mod error;
pub mod headers;
mod service;
pub mod upgrade;
mod upstream_body;
pub mod validate;

pub use body::ResponseBody;
pub use error::{ProxyError, ERROR_HEADER};
pub use service::{handle, ConnInfo};
pub use upstream_body::{BodyTooLarge, UpstreamBody};
