//! A live snapshot compiled once from a fixed config (no listeners, no network): what
//! the routing targets look requests up in.

use std::sync::{Arc, OnceLock};

use switchyard::snapshot::{compile_fresh, Runtime};

const CONFIG: &str = r#"
[upstreams.v1]
endpoints = ["127.0.0.1:9"]
[upstreams.v2]
endpoints = ["127.0.0.1:10"]
[upstreams.v3]
endpoints = ["127.0.0.1:11"]

[[routes]]
name = "shop"
hosts = ["shop.example.com", "*.shop.example.com"]
backends = [{ upstream = "v1", weight = 90 }, { upstream = "v2", weight = 10 }, { upstream = "v3", weight = 0 }]
overrides = [{ header = "x-canary", value = "always", upstream = "v3" }, { cookie = "preview", upstream = "v2" }]

[[routes]]
name = "api"
path_prefix = "/api/v1"
headers = { "x-tenant" = "acme" }
backends = [{ upstream = "v2" }]

[[routes]]
name = "sticky"
path_prefix = "/s"
backends = [{ upstream = "v1", weight = 99.99 }, { upstream = "v2", weight = 0.01 }, { upstream = "v3", weight = 0 }]
sticky = { cookie = "sy" }

[[routes]]
name = "any"
backends = [{ upstream = "v1", weight = 1 }, { upstream = "v2", weight = 1 }]
sticky = { header = "x-user" }
"#;

pub fn runtime() -> Arc<Runtime> {
    // Lives in a static for the whole run (reachable, so LeakSanitizer does not report it
    // at exit). Compiling starts no task and needs no async runtime.
    static SNAPSHOT: OnceLock<Arc<Runtime>> = OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let cfg = switchyard::config::parse(std::path::Path::new("fuzz.toml"), CONFIG).expect("valid");
            Arc::new(compile_fresh(&cfg))
        })
        .clone()
}
