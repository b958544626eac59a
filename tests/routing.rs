//! Route matching end to end: hosts, wildcards, prefixes, header conditions, tie order, 404.

mod support;

use support::*;

async fn who(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, h, _) = get(&proxy.url(path), headers).await;
    if status == 404 {
        assert_eq!(h["x-switchyard-error"], "no-route");
        return "404".into();
    }
    assert_eq!(status, 200, "{path} {headers:?}");
    h["x-upstream"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn routing_matrix() {
    let names = ["exact", "wild", "api", "apiv2", "tenant", "first", "second", "fallback"];
    let mut ups = Vec::new();
    let mut cfg = String::new();
    for n in names {
        let u = spawn_upstream(n).await;
        cfg += &format!("[upstreams.{n}]\nendpoints = [\"{}\"]\n", u.addr);
        ups.push(u);
    }
    cfg += r#"
[[routes]]
name = "exact"
hosts = ["Shop.Example.com"]
backends = [{ upstream = "exact", weight = 1 }]

[[routes]]
name = "wild"
hosts = ["*.example.com"]
backends = [{ upstream = "wild", weight = 1 }]

[[routes]]
name = "tenant"
hosts = ["api.test"]
path_prefix = "/api"
headers = { "x-tenant" = "acme" }
backends = [{ upstream = "tenant", weight = 1 }]

[[routes]]
name = "api"
hosts = ["api.test"]
path_prefix = "/api"
backends = [{ upstream = "api", weight = 1 }]

[[routes]]
name = "apiv2"
hosts = ["api.test"]
path_prefix = "/api/v2/"
backends = [{ upstream = "apiv2", weight = 1 }]

[[routes]]
name = "first"
hosts = ["tie.test"]
path_prefix = "/same"
backends = [{ upstream = "first", weight = 1 }]

[[routes]]
name = "second"
hosts = ["tie.test"]
path_prefix = "/same"
backends = [{ upstream = "second", weight = 1 }]

[[routes]]
name = "fallback"
hosts = ["fallback.test"]
backends = [{ upstream = "fallback", weight = 1 }]
"#;
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;

    // (host, path, extra headers, expected upstream or "404")
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        // Exact host: case-insensitive, port ignored.
        ("shop.example.com", "/", &[], "exact"),
        ("SHOP.EXAMPLE.COM:8080", "/x", &[], "exact"),
        // Wildcards match any subdomain but not the bare domain.
        ("a.example.com", "/", &[], "wild"),
        ("a.b.example.com", "/", &[], "wild"),
        ("example.com", "/", &[], "404"),
        // Segment-aware prefixes: /api matches /api and /api/x, not /apix.
        ("api.test", "/api", &[], "api"),
        ("api.test", "/api/x", &[], "api"),
        ("api.test", "/apix", &[], "404"),
        ("api.test", "/api/v2", &[], "apiv2"),
        ("api.test", "/api/v2/users", &[], "apiv2"),
        ("api.test", "/api/v22", &[], "api"),
        // Normalized before matching.
        ("api.test", "/x/../api/v2/./y", &[], "apiv2"),
        ("api.test", "//api//v2", &[], "apiv2"),
        ("api.test", "/%61pi/v2", &[], "apiv2"),
        // Header conditions: "tenant" has the same prefix as "api" and comes first in the
        // file, so it wins when its header matches and is skipped when it does not.
        ("api.test", "/api/x", &[("x-tenant", "acme")], "tenant"),
        ("api.test", "/api/x", &[("x-tenant", "globex")], "api"),
        // The longer prefix still wins over the header-matching shorter one.
        ("api.test", "/api/v2/x", &[("x-tenant", "acme")], "apiv2"),
        // Ties go to file order.
        ("tie.test", "/same/thing", &[], "first"),
        ("fallback.test", "/anything/at/all", &[], "fallback"),
        ("unknown.test", "/", &[], "404"),
    ];
    for (host, path, headers, want) in cases {
        let mut h: Vec<(&str, &str)> = vec![("host", host)];
        h.extend_from_slice(headers);
        assert_eq!(who(&proxy, path, &h).await, *want, "host {host} path {path} headers {headers:?}");
    }
}

#[tokio::test]
async fn header_conditions_select_among_equal_prefixes() {
    let acme = spawn_upstream("acme").await;
    let other = spawn_upstream("other").await;
    let cfg = format!(
        r#"
[upstreams.acme]
endpoints = ["{}"]
[upstreams.other]
endpoints = ["{}"]

[[routes]]
name = "acme"
path_prefix = "/app"
headers = {{ "x-tenant" = "acme" }}
backends = [{{ upstream = "acme", weight = 1 }}]

[[routes]]
name = "everyone"
path_prefix = "/app"
backends = [{{ upstream = "other", weight = 1 }}]
"#,
        acme.addr, other.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    assert_eq!(who(&proxy, "/app/x", &[("x-tenant", "acme")]).await, "acme");
    assert_eq!(who(&proxy, "/app/x", &[("x-tenant", "globex")]).await, "other");
    assert_eq!(who(&proxy, "/app/x", &[]).await, "other");
    // Longest prefix beats header specificity: /other is served by nobody.
    assert_eq!(who(&proxy, "/other", &[("x-tenant", "acme")]).await, "404");
}

#[tokio::test]
async fn upstream_receives_the_normalized_path_and_query() {
    let up = spawn_upstream("u").await;
    let cfg = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/api\"\nbackends = [{{ upstream = \"u\", weight = 1 }}]\n",
        up.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let (status, _, _) = get(&proxy.url("/static/../api//a/./b%7E?q=1&r=%2F"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(up.last_seen().uri, "/api/a/b~?q=1&r=%2F");
    // What was matched is what is forwarded: a traversal out of /api does not reach it.
    let (status, _, _) = get(&proxy.url("/api/../admin"), &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn absolute_form_routes_on_its_authority() {
    let a = spawn_upstream("a").await;
    let b = spawn_upstream("b").await;
    let cfg = format!(
        r#"
[upstreams.a]
endpoints = ["{}"]
[upstreams.b]
endpoints = ["{}"]
[[routes]]
name = "a"
hosts = ["a.test"]
backends = [{{ upstream = "a", weight = 1 }}]
[[routes]]
name = "b"
hosts = ["b.test"]
backends = [{{ upstream = "b", weight = 1 }}]
"#,
        a.addr, b.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let resp = raw(proxy.addr, b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: b"), "{resp}");
    assert_eq!(b.last_seen().headers["host"], "b.test");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn http11_without_host_is_rejected_before_any_upstream() {
    let up = spawn_upstream("u").await;
    let cfg = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n",
        up.addr
    );
    let proxy = spawn_proxy(&with_listeners(&cfg)).await;
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("x-switchyard-error: malformed-request"), "{resp}");
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(up.hits(), 0);
}
