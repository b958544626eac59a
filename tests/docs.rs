//! The configuration reference cannot drift from the decoder: every key the decoder
//! reads has a row in `docs/configuration.md`, and the reference's complete example is
//! a valid config.

use std::path::Path;

fn reference() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap()
}

/// A config that opens every table the decoder knows, so it asks for every key.
const EVERY_TABLE: &str = r#"
[server]
[server.limits]
[[server.tls]]
certs = [{ cert = "a.pem", key = "a-key.pem" }]
[admin]
[cluster]
etcd = ["http://127.0.0.1:2379"]
prefix = "/x"
[upstreams.a]
tls = { sni = "x" }
health = {}
outlier = {}
request_headers = { set = {}, add = {}, remove = [] }
response_headers = { set = {}, add = {}, remove = [] }
auth = { aws_sigv4 = { region = "r", service = "lambda" } }
[upstreams.b]
auth = { gcp_id_token = { audience = "https://x" } }
[upstreams.c]
auth = { bearer = { env = "X" } }
[[routes]]
headers = {}
backends = [{ upstream = "a" }]
sticky = { cookie = "c" }
overrides = [{ header = "x", upstream = "a" }]
mirror = { upstream = "a" }
rewrite = { prefix = "/" }
redirect = { scheme = "https" }
request_headers = { set = {}, add = {}, remove = [] }
response_headers = { set = {}, add = {}, remove = [] }
[routes.rollout]
canary = "a"
"#;

#[test]
fn every_key_the_decoder_reads_is_documented() {
    let doc = reference();
    let keys = switchyard::config::keys_asked(EVERY_TABLE);
    assert!(keys.len() > 70, "the probe config reached every table: {keys:?}");
    let missing: Vec<_> = keys.iter().filter(|k| !doc.contains(&format!("| `{k}` |"))).collect();
    assert!(missing.is_empty(), "docs/configuration.md has no row for: {missing:?}");
}

#[test]
fn the_reference_example_is_a_valid_config() {
    let doc = reference();
    let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let cfg = switchyard::config::parse(Path::new("docs/configuration.md"), example)
        .unwrap_or_else(|e| panic!("the reference's example is invalid:\n{e}"));
    assert_eq!(cfg.routes[0].rollout.as_ref().unwrap().steps, vec![1.0, 5.0, 25.0, 50.0, 100.0]);
}
