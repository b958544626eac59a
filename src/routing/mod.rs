//! Which route and which backend serve a request: the compiled route table, overrides,
//! sticky assignment and the weighted split. Everything here is built once per config
//! snapshot and only read by the request path.

pub mod fields;
pub mod path;
pub mod rewrite;
mod route;
pub mod split;
pub mod sticky;
pub mod table;

pub use fields::Fields;
pub use rewrite::{Redirect, Rewrite};
pub use route::{cookie, Backend, Choice, Override, OverrideOn, Route, Source, Sticky};
pub use split::{resolve_shares, Split, RESOLUTION};
pub use table::RoutingTable;
