//! Upstream identity: what the proxy proves to an upstream that stands behind a cloud
//! platform's IAM. AWS SigV4 request signing (`aws`) and Google ID tokens from the
//! metadata server (`gcp`). Neither names anything else of the crate; the upstream pools
//! hold them and the request path and health checks call them.

pub mod aws;
pub mod gcp;
