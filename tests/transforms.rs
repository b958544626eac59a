//! Rewrites, header transforms and redirects, end to end: what the upstream saw (path,
//! query and headers exactly as sent), what the client got, what was counted, and what
//! bad config gets.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

fn one_route(up: &TestUpstream, route: &str, upstream: &str) -> String {
    with_listeners(&format!(
        "[upstreams.fn]\nendpoints = [\"{}\"]\n{upstream}\n[[routes]]\nname = \"r\"\n{route}\nbackends = [{{ upstream = \"fn\" }}]\n",
        up.addr
    ))
}

/// The path and query the upstream received for `path`.
async fn forwarded(proxy: &TestProxy, up: &TestUpstream, path: &str) -> String {
    let (status, _, _) = get(&proxy.url(path), &[]).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    up.last_seen().uri
}

#[tokio::test]
async fn prefix_rewrites_replace_or_strip_the_matched_prefix_and_keep_the_query() {
    let up = spawn_upstream("fn").await;
    let proxy =
        spawn_proxy(&one_route(&up, "path_prefix = \"/orders\"\nrewrite = { prefix = \"/api/orders\" }", "")).await;
    assert_eq!(forwarded(&proxy, &up, "/orders/42?x=1&y=%20").await, "/api/orders/42?x=1&y=%20");
    assert_eq!(forwarded(&proxy, &up, "/orders").await, "/api/orders");

    let up = spawn_upstream("fn").await;
    let proxy = spawn_proxy(&one_route(&up, "path_prefix = \"/orders\"\nrewrite = { prefix = \"/\" }", "")).await;
    assert_eq!(forwarded(&proxy, &up, "/orders/42?x=1").await, "/42?x=1");
    assert_eq!(forwarded(&proxy, &up, "/orders").await, "/");
}

#[tokio::test]
async fn regex_rewrites_replace_the_first_match_with_its_groups() {
    let up = spawn_upstream("fn").await;
    let route = r#"path_prefix = "/orders"
rewrite = { regex = "^/orders/(\\d+)/items/(\\w+)$", replace = "/o/$1/i/$2" }"#;
    let proxy = spawn_proxy(&one_route(&up, route, "")).await;
    assert_eq!(forwarded(&proxy, &up, "/orders/42/items/abc?q=1").await, "/o/42/i/abc?q=1");
    // No match: forwarded as it came.
    assert_eq!(forwarded(&proxy, &up, "/orders/x/items/abc").await, "/orders/x/items/abc");
}

#[tokio::test]
async fn base_paths_follow_the_rewrite_and_the_result_is_normalized_again() {
    let up = spawn_upstream("fn").await;
    let proxy = spawn_proxy(&one_route(
        &up,
        "path_prefix = \"/orders\"\nrewrite = { prefix = \"/\" }",
        "base_path = \"/api/orders-v2/\"",
    ))
    .await;
    assert_eq!(forwarded(&proxy, &up, "/orders/42?x=1").await, "/api/orders-v2/42?x=1");
    assert_eq!(forwarded(&proxy, &up, "/orders").await, "/api/orders-v2");
    // Dot segments the client sent are resolved before routing, and nothing the
    // rewrite produces escapes the base path.
    assert_eq!(forwarded(&proxy, &up, "/orders/a/../b%7E").await, "/api/orders-v2/b~");

    let up = spawn_upstream("fn").await;
    let route = r#"rewrite = { regex = "^/(.*)$", replace = "/x/../$1" }"#;
    let proxy = spawn_proxy(&one_route(&up, route, "base_path = \"/api\"")).await;
    assert_eq!(forwarded(&proxy, &up, "/hello?q").await, "/api/hello?q");
}

#[tokio::test]
async fn request_headers_apply_route_then_upstream_and_response_headers_upstream_then_route() {
    let up = spawn_upstream("fn").await;
    let route = r#"request_headers = { set = { "x-env" = "route", "x-route" = "yes" }, add = { "x-tag" = "b" }, remove = ["x-debug"] }
response_headers = { set = { "strict-transport-security" = "max-age=63072000", "x-layer" = "route" } }"#;
    let upstream = r#"request_headers = { set = { "x-env" = "upstream" } }
response_headers = { set = { "x-layer" = "upstream" }, remove = ["x-upstream"] }"#;
    let proxy = spawn_proxy(&one_route(&up, route, upstream)).await;
    let (status, h, _) =
        get(&proxy.url("/"), &[("x-tag", "a"), ("x-debug", "1"), ("x-env", "client"), ("X-Route", "client")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = up.last_seen().headers;
    assert_eq!(seen.get_all("x-env").iter().collect::<Vec<_>>(), ["upstream"], "the upstream wins on a name both set");
    assert_eq!(seen["x-route"], "yes");
    assert_eq!(seen.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"], "add appends");
    assert!(seen.get("x-debug").is_none());
    // Forwarding headers are still the proxy's.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    // A client's `Connection` cannot strip what a transform sets.
    let resp =
        raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-route, x-env\r\nX-Route: client\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.last_seen().headers;
    assert_eq!((seen["x-route"].to_str().unwrap(), seen["x-env"].to_str().unwrap()), ("yes", "upstream"));
    // Response: the upstream's first, then the route's (the route wins).
    assert_eq!(h["x-layer"], "route");
    assert_eq!(h["strict-transport-security"], "max-age=63072000");
    assert!(h.get("x-upstream").is_none());
}

#[tokio::test]
async fn secret_values_come_from_env_and_files_and_never_show() {
    let up = spawn_upstream("fn").await;
    std::env::set_var("SWITCHYARD_TEST_FN_KEY", "env-secret-1234");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "file-secret-5678\n").unwrap();
    let upstream = format!(
        "request_headers = {{ set = {{ \"x-functions-key\" = {{ env = \"SWITCHYARD_TEST_FN_KEY\" }}, \"x-access\" = {{ file = \"{}\" }} }} }}",
        key_file.display()
    );
    let proxy = spawn_proxy(&one_route(&up, "", &upstream)).await;
    let (status, _, _) = get(&proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = up.last_seen().headers;
    assert_eq!(seen["x-functions-key"], "env-secret-1234");
    assert_eq!(seen["x-access"], "file-secret-5678", "one trailing newline stripped");

    for page in ["/api/v1/status", "/"] {
        let (_, _, body) = get(&format!("http://{}{page}", proxy.admin), &[]).await;
        assert!(!body.contains("env-secret") && !body.contains("file-secret"), "{page} shows a secret");
    }

    // A rotated file applies without a restart (the file is watched).
    std::fs::write(&key_file, "file-secret-rotated\n").unwrap();
    eventually("the rotated secret is sent", Duration::from_secs(10), || async {
        get(&proxy.url("/"), &[]).await;
        up.last_seen().headers["x-access"] == "file-secret-rotated"
    })
    .await;
}

#[tokio::test]
async fn redirects_are_answered_by_the_proxy_with_the_query_kept_and_counted_without_an_upstream() {
    let up = spawn_upstream("fn").await;
    let config = with_listeners(&format!(
        r#"[upstreams.fn]
endpoints = ["{}"]

[[routes]]
name = "to-https"
hosts = ["shop.example.com"]
redirect = {{ scheme = "https", status = 308 }}
response_headers = {{ set = {{ "strict-transport-security" = "max-age=63072000" }} }}

[[routes]]
name = "moved"
path_prefix = "/old"
redirect = {{ host = "new.example.com", port = 8443, prefix = "/new" }}

[[routes]]
name = "app"
backends = [{{ upstream = "fn" }}]
"#,
        up.addr
    ));
    let proxy = spawn_proxy(&config).await;
    let (status, h, _) = get(&proxy.url("/a/b?q=1&r=2"), &[("host", "shop.example.com:8080")]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://shop.example.com/a/b?q=1&r=2");
    assert_eq!(h["strict-transport-security"], "max-age=63072000");
    let (status, h, _) = get(&proxy.url("/old/x?y"), &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "301 by default");
    assert_eq!(h["location"], "http://new.example.com:8443/new/x?y");
    assert_eq!(up.hits(), 0, "a redirect never reaches an upstream");
    proxy
        .metric_reaching(r#"switchyard_requests_total{route="to-https",upstream="",version="",status="308"}"#, 1.0)
        .await;
    proxy.metric_reaching(r#"switchyard_requests_total{route="moved",upstream="",version="",status="301"}"#, 1.0).await;
    // HTTP/1.1 and HTTP/2 answer the same.
    let (status, h, _) = send(&h2c_client(), "GET", &proxy.url("/old?z=1"), &[], "").await;
    assert_eq!(
        (status, h["location"].to_str().unwrap()),
        (StatusCode::MOVED_PERMANENTLY, "http://new.example.com:8443/new?z=1")
    );
}

fn config_errors(text: &str) -> String {
    match switchyard::config::parse(std::path::Path::new("t.toml"), text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_transforms_are_config_errors_with_positions_and_no_secrets() {
    let base = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n";
    let e = config_errors(&format!(
        "{base}[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\nrewrite = {{ regex = \"^/(\", replace = \"/$1\" }}\n"
    ));
    assert!(e.contains("t.toml:6:21: routes[0].rewrite.regex: invalid regex"), "{e}");
    let e = config_errors(&format!(
        "{base}[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\nrewrite = {{ regex = \"^/(a)$\", replace = \"/$2\" }}\n"
    ));
    assert!(e.contains("routes[0].rewrite.replace: $2 names a group the regex does not have (it has 1)"), "{e}");
    let e = config_errors(&format!(
        "{base}request_headers = {{ set = {{ \"x-k\" = {{ env = \"SWITCHYARD_TEST_SURELY_UNSET\" }} }} }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\n"
    ));
    assert!(
        e.contains("t.toml:3:") && e.contains("environment variable SWITCHYARD_TEST_SURELY_UNSET is not set"),
        "{e}"
    );
    let e = config_errors(&format!(
        "{base}[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\nrequest_headers = {{ set = {{ \"Host\" = \"x\" }} }}\n"
    ));
    assert!(
        e.contains("routes[0].request_headers.set.Host: Host is set only through the upstream's `host_header`"),
        "{e}"
    );
    let e = config_errors(&format!(
        "{base}[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\nredirect = {{ scheme = \"https\" }}\n"
    ));
    assert!(
        e.contains("routes[0].backends: a route with `redirect` answers itself: it may not have `backends`"),
        "{e}"
    );
    let e = config_errors(&format!("{base}[[routes]]\nname = \"r\"\nredirect = {{ status = 308 }}\n"));
    assert!(e.contains("a redirect changes at least one of scheme, host, port, path or prefix"), "{e}");
    let e =
        config_errors(&format!("{base}[[routes]]\nname = \"r\"\nredirect = {{ scheme = \"https\", status = 200 }}\n"));
    assert!(e.contains("status 200: expected 301, 302, 303, 307 or 308"), "{e}");

    // An empty secret (a file caught mid-rotation) is refused: the last good config stays.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = config_errors(&format!(
        "{base}request_headers = {{ set = {{ \"x-k\" = {{ file = \"{}\" }} }} }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\n",
        empty.display()
    ));
    assert!(e.contains("the value read is empty"), "{e}");

    // A secret that is not a valid header value is refused without being echoed.
    std::env::set_var("SWITCHYARD_TEST_BAD_SECRET", "top-secret\u{7f}value");
    let e = config_errors(&format!(
        "{base}request_headers = {{ set = {{ \"x-k\" = {{ env = \"SWITCHYARD_TEST_BAD_SECRET\" }} }} }}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\n"
    ));
    assert!(e.contains("not a valid header value") && !e.contains("top-secret"), "{e}");
}

#[tokio::test]
async fn a_redirect_needs_a_host_to_build_its_location() {
    let proxy =
        spawn_proxy(&with_listeners("[[routes]]\nname = \"all-https\"\nredirect = { scheme = \"https\" }\n")).await;
    let resp = raw(proxy.addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.0 400"),
        "no open redirect without a Host: {resp}"
    );
    let (status, h, _) = get(&proxy.url("/x?y=1"), &[("host", "a.example")]).await;
    assert_eq!((status, h["location"].to_str().unwrap()), (StatusCode::MOVED_PERMANENTLY, "https://a.example/x?y=1"));
}
