//! The README's "Serverless backends" recipes, run as written against a fake of each
//! platform on loopback. Only what cannot exist here is swapped: endpoint addresses (the
//! function's host becomes a loopback fake, HTTP instead of HTTPS), the secret file's
//! path, and the environment the recipe reads (AWS credentials, the function key,
//! `GCE_METADATA_HOST`). Each test prints what its fake received (`--nocapture`).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use support::function::{Function, Received};
use support::metadata::{claims, FakeMetadata};
use support::*;

/// The toml blocks of the README's "Serverless backends" section, in order.
fn recipes() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## Serverless backends").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section.split("```toml\n").skip(1).map(|b| b[..b.find("```").unwrap()].to_string()).collect()
}

/// The recipe with its hosts pointed at loopback: `v1` for the existing version, `f`
/// for the function (plain HTTP), `secret` for any `/run/secrets/...` file.
fn localized(recipe: &str, v1: &TestUpstream, f: &Function, secret: &std::path::Path) -> String {
    let mut out = String::new();
    for line in recipe.lines() {
        if line == "tls = true" {
            continue;
        }
        let line = if line.starts_with("endpoints = [\"10.0.0.5:8080\"]") {
            format!("endpoints = [\"{}\"]", v1.addr)
        } else if line.starts_with("endpoints = [") {
            format!("endpoints = [\"{}\"]", f.addr)
        } else {
            line.replace("/run/secrets/cf-access-client-secret", &secret.display().to_string())
        };
        out.push_str(&line);
        out.push('\n');
    }
    with_listeners(&out)
}

/// Requests to `path` until the function has served `want` of them (the recipes split
/// a small share to it); returns what it received.
async fn until_the_function_serves(proxy: &TestProxy, f: &Function, path: &str, want: usize) -> Vec<Received> {
    let c = client();
    for _ in 0..5000 {
        let (status, _, _) = send(&c, "GET", &proxy.url(path), &[], "").await;
        assert_eq!(status, StatusCode::OK);
        if f.all().len() >= want {
            break;
        }
    }
    let got = f.all();
    assert!(got.len() >= want, "the function served {} of the requests", got.len());
    got
}

fn show(name: &str, r: &Received) {
    let headers: HashMap<&str, &str> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut names: Vec<_> = headers.keys().copied().collect();
    names.sort_unstable();
    println!("{name}: the function saw {} {}?{}", r.method, r.path, r.query);
    for n in names {
        let v = headers[n];
        let shown = if v.len() > 60 { format!("{}...", &v[..60]) } else { v.to_string() };
        println!("    {n}: {shown}");
    }
}

#[tokio::test]
async fn lambda_function_url_with_iam() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDRECIPE");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "recipe/secret+key");
    std::env::set_var("AWS_SESSION_TOKEN", "recipe-session-token");
    let (v1, f) = (spawn_upstream("v1").await, Function::start().await);
    let proxy = spawn_proxy(&localized(&recipes()[0], &v1, &f, std::path::Path::new("-"))).await;
    let got = until_the_function_serves(&proxy, &f, "/orders/42?x=1", 3).await;
    for r in &got {
        r.verify("AKIDRECIPE", "recipe/secret+key").unwrap();
        assert_eq!(r.header("host"), Some("abc123.lambda-url.eu-west-1.on.aws"));
        assert_eq!(r.header("x-amz-security-token"), Some("recipe-session-token"));
    }
    show("lambda", &got[0]);
}

#[tokio::test]
async fn azure_function_with_key_and_api_path() {
    std::env::set_var("ORDERS_FN_KEY", "azure-function-key-123");
    let (v1, f) = (spawn_upstream("v1").await, Function::start().await);
    let proxy = spawn_proxy(&localized(&recipes()[1], &v1, &f, std::path::Path::new("-"))).await;
    let c = client();
    let mut powered_by_seen = false;
    for _ in 0..2000 {
        let (status, h, _) = send(&c, "GET", &proxy.url("/orders/42?x=1"), &[], "").await;
        assert_eq!(status, StatusCode::OK);
        powered_by_seen |= h.get("x-powered-by").is_some();
        if f.all().len() >= 3 {
            break;
        }
    }
    assert!(!powered_by_seen, "x-powered-by is removed from the function's answers");
    let got = f.all();
    assert!(got.len() >= 3);
    for r in &got {
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/api/orders/42", "x=1"));
        assert_eq!(r.header("x-functions-key"), Some("azure-function-key-123"));
        assert_eq!(r.header("host"), Some("orders-fn.azurewebsites.net"));
    }
    let (_, _, status) = get(&format!("http://{}/api/v1/status", proxy.admin), &[]).await;
    assert!(!status.contains("azure-function-key"));
    show("azure", &got[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_run_with_an_id_token() {
    let metadata = FakeMetadata::start().await;
    std::env::set_var("GCE_METADATA_HOST", metadata.addr.to_string());
    let (v1, f) = (spawn_upstream("v1").await, Function::start().await);
    let proxy = spawn_proxy(&localized(&recipes()[2], &v1, &f, std::path::Path::new("-"))).await;
    let got = until_the_function_serves(&proxy, &f, "/orders/7", 3).await;
    for r in &got {
        let token = r.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("a bearer token");
        assert_eq!(claims(token).unwrap()["aud"], "https://orders-abc-ew.a.run.app");
        assert_eq!(r.header("host"), Some("orders-abc-ew.a.run.app"));
    }
    assert!(metadata.fetches() <= 2, "{} fetches for {} requests to the function", metadata.fetches(), got.len());
    show("cloud run", &got[0]);
}

#[tokio::test]
async fn cloudflare_worker_behind_access() {
    std::env::set_var("CF_ACCESS_CLIENT_ID", "cf-client-id.access");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cf-access-client-secret");
    std::fs::write(&secret, "cf-client-secret-1\n").unwrap();
    let (v1, f) = (spawn_upstream("v1").await, Function::start().await);
    let proxy = spawn_proxy(&localized(&recipes()[3], &v1, &f, &secret)).await;
    let got = until_the_function_serves(&proxy, &f, "/orders", 2).await;
    assert_eq!(got[0].header("cf-access-client-id"), Some("cf-client-id.access"));
    assert_eq!(got[0].header("cf-access-client-secret"), Some("cf-client-secret-1"));
    show("cloudflare", &got[0]);
    // Rotated in place: the next requests carry the new secret.
    std::fs::write(&secret, "cf-client-secret-2\n").unwrap();
    eventually("the rotated secret is sent", Duration::from_secs(10), || async {
        get(&proxy.url("/orders"), &[]).await;
        f.last().header("cf-access-client-secret") == Some("cf-client-secret-2")
    })
    .await;
}

#[tokio::test]
async fn the_edge_redirect() {
    let proxy = spawn_proxy(&with_listeners(&recipes()[4])).await;
    let (status, h, _) = get(&proxy.url("/cart?id=9"), &[("host", "shop.example.com")]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://shop.example.com/cart?id=9");
    assert_eq!(h["strict-transport-security"], "max-age=63072000");
    println!("redirect: 308 Location: {}", h["location"].to_str().unwrap());
}

#[test]
fn the_section_has_the_four_recipes_and_the_redirect() {
    assert_eq!(recipes().len(), 5);
}
