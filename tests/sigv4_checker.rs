//! The independent SigV4 checker (tests/support/sigv4.rs) against AWS's published signing
//! test suite: it must accept every vector, compute the suite's canonical request and
//! string-to-sign, and reject every one-byte change. A checker that cannot fail would
//! prove nothing about the proxy's signatures.

#[path = "support/sigv4.rs"]
mod sigv4;
#[path = "support/sigv4_vectors.rs"]
mod vectors;

use sigv4::{Key, Seen};
use vectors::VECTORS;

/// `post-sts-header-after` adds the session token after signing: a valid signature,
/// but a token AWS would not accept unsigned.
const UNSIGNED_TOKEN: &str = "post-sts-header-after";

/// A request parsed from a vector's text, owning what [`Seen`] borrows.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn parse(text: &str) -> Req {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let line = lines.next().unwrap();
        let (method, rest) = line.split_once(' ').unwrap();
        // (smithy-rs `double-url-encode` leaves out the version)
        let target = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        Req { method: method.into(), path: path.into(), query: query.into(), headers, body: body.as_bytes().to_vec() }
    }

    fn seen(&self) -> Seen<'_> {
        Seen {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn verify(&self, key: &Key) -> Result<(), String> {
        sigv4::verify(&self.seen(), key)
    }

    fn header_index(&self, name: &str) -> usize {
        self.headers.iter().position(|(k, _)| k.eq_ignore_ascii_case(name)).unwrap()
    }

    fn authorization(&self) -> sigv4::Authorization {
        sigv4::parse_authorization(&self.headers[self.header_index("authorization")].1).unwrap()
    }
}

/// Change the last ASCII letter or digit of `s` into another (a→b, z→a, 9→0...).
fn flip_last_alnum(s: &str) -> String {
    let i = s.rfind(|c: char| c.is_ascii_alphanumeric()).expect("something to flip");
    let c = s.as_bytes()[i];
    let to = match c {
        b'z' => b'a',
        b'Z' => b'A',
        b'9' => b'0',
        c => c + 1,
    };
    let mut out = s.to_string();
    out.replace_range(i..=i, &(to as char).to_string());
    out
}

#[test]
fn every_vector_verifies_and_computes_the_suites_canonical_request() {
    assert!(VECTORS.len() >= 15);
    for v in VECTORS.iter().filter(|v| v.name != UNSIGNED_TOKEN) {
        let req = Req::parse(v.signed_request);
        if let Err(why) = req.verify(&v.key) {
            panic!("{}: {why}", v.name);
        }
        let auth = req.authorization();
        let creq = sigv4::canonical_request(&req.seen(), &auth.signed_headers).unwrap();
        if let Some(want) = v.canonical_request {
            assert_eq!(creq, want, "{}: canonical request", v.name);
        }
        if let Some(want) = v.string_to_sign {
            let amz_date = &req.headers[req.header_index("x-amz-date")].1;
            let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
            assert_eq!(sigv4::string_to_sign(amz_date, &scope, &creq), want, "{}: string to sign", v.name);
        }
    }
}

#[test]
fn a_session_token_added_after_signing_is_refused() {
    let v = VECTORS.iter().find(|v| v.name == UNSIGNED_TOKEN).unwrap();
    let mut req = Req::parse(v.signed_request);
    let why = req.verify(&v.key).unwrap_err();
    assert!(why.contains("x-amz-security-token is present but not signed"), "{why}");
    // The signature itself is good: without the stray token the request verifies.
    req.headers.remove(req.header_index("x-amz-security-token"));
    req.verify(&v.key).unwrap();
}

/// Every way of changing one thing the signature covers must be caught.
#[test]
fn every_vector_fails_when_one_byte_changes() {
    let mut escaped = Vec::new();
    for v in VECTORS.iter().filter(|v| v.name != UNSIGNED_TOKEN) {
        let good = Req::parse(v.signed_request);
        let auth = good.authorization();
        let mut bad: Vec<(String, Req)> = Vec::new();
        let mut change = |what: String, f: &dyn Fn(&mut Req)| {
            let mut r = good.clone();
            f(&mut r);
            bad.push((what, r));
        };
        change("a byte appended to the path".into(), &|r| r.path.push('x'));
        // (In place only where no dot segment can swallow the change.)
        if !good.path.contains("/.") && good.path.contains(|c: char| c.is_ascii_alphanumeric()) {
            change("a byte of the path".into(), &|r| r.path = flip_last_alnum(&r.path));
        }
        // Sent decoded, a `%XX` of the path is a different path to SigV4.
        if let Some(i) = good.path.find('%') {
            change("an escape of the path decoded".into(), &|r| {
                let byte = u8::from_str_radix(&r.path[i + 1..i + 3], 16).unwrap();
                r.path.replace_range(i..i + 3, &(byte as char).to_string());
            });
        }
        change("the method".into(), &|r| r.method = if r.method == "GET" { "POST".into() } else { "GET".into() });
        if !good.query.is_empty() {
            change("a byte of the query".into(), &|r| r.query = flip_last_alnum(&r.query));
        }
        change("a query parameter added".into(), &|r| {
            r.query = if r.query.is_empty() { "x=1".into() } else { format!("{}&x=1", r.query) }
        });
        if !good.body.is_empty() {
            change("a byte of the body".into(), &|r| r.body[0] ^= 1);
        }
        change("a byte appended to the body".into(), &|r| r.body.push(b'x'));
        for name in &auth.signed_headers {
            change(format!("a byte of signed header {name}"), &|r| {
                let i = r.header_index(name);
                r.headers[i].1 = flip_last_alnum(&r.headers[i].1);
            });
            change(format!("signed header {name} removed"), &|r| {
                r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name))
            });
        }
        change("a second of x-amz-date".into(), &|r| {
            let i = r.header_index("x-amz-date");
            r.headers[i].1 = flip_last_alnum(r.headers[i].1.trim_end_matches('Z')) + "Z";
        });
        change("a hex digit of the signature".into(), &|r| {
            let i = r.header_index("authorization");
            let value = &r.headers[i].1;
            let flipped =
                if value.ends_with('f') { format!("{}0", &value[..value.len() - 1]) } else { flip_last_alnum(value) };
            r.headers[i].1 = flipped;
        });
        change("the Authorization header removed".into(), &|r| {
            r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
        });
        change("a second Authorization header".into(), &|r| {
            let i = r.header_index("authorization");
            r.headers.push(r.headers[i].clone());
        });
        for (what, r) in &bad {
            if r.verify(&v.key).is_ok() {
                escaped.push(format!("{}: {what}", v.name));
            }
        }
        let wrong_keys = [
            ("the secret", Key { secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ", ..v.key }),
            ("the access key id", Key { access_key_id: "AKIDEXAMPLF", ..v.key }),
            ("the region", Key { region: "us-west-2", ..v.key }),
            ("the service", Key { service: "lambdb", ..v.key }),
        ];
        for (what, key) in wrong_keys {
            if good.verify(&key).is_ok() {
                escaped.push(format!("{}: {what} changed", v.name));
            }
        }
    }
    assert!(escaped.is_empty(), "changes the checker let through:\n{}", escaped.join("\n"));
}

/// What SigV4 deliberately does not cover still verifies: header name case, spacing
/// inside values, unsigned headers, the spaces between Authorization parts, and paths
/// that normalize to the same one.
#[test]
fn what_the_signature_does_not_cover_may_change() {
    let by_name = |n: &str| VECTORS.iter().find(|v| v.name == n).unwrap();
    let v = by_name("get-header-value-trim");
    let mut req = Req::parse(v.signed_request);
    for (k, val) in req.headers.iter_mut() {
        *k = k.to_ascii_uppercase();
        if k == "MY-HEADER2" {
            *val = "   \"a b      c\"  ".into();
        }
    }
    req.headers.push(("x-unsigned".into(), "anything".into()));
    let i = req.header_index("authorization");
    req.headers[i].1 = req.headers[i].1.replace(", ", ",");
    req.verify(&v.key).unwrap();

    let v = by_name("get-relative-relative-normalized");
    let mut req = Req::parse(v.signed_request);
    req.path = "/other/./x//y/../../..".into();
    req.verify(&v.key).unwrap();
    req.path = "/./example1/../".into();
    req.verify(&v.key).unwrap();
}

#[test]
fn the_path_is_encoded_once_more_and_the_query_once() {
    // AWS's own example of a doubly encoded path.
    assert_eq!(sigv4::canonical_uri("/documents%20and%20settings/"), "/documents%2520and%2520settings/");
    // Raw bytes (as the suite sends them) are encoded once, encoded ones once more.
    assert_eq!(sigv4::canonical_uri("/ሴ"), "/%E1%88%B4");
    assert_eq!(sigv4::canonical_uri("/%E1%88%B4"), "/%25E1%2588%25B4");
    assert_eq!(sigv4::canonical_uri("/a:b@c=d+e"), "/a%3Ab%40c%3Dd%2Be");
    assert_eq!(sigv4::canonical_uri(""), "/");
    assert_eq!(sigv4::canonical_uri("/a/b/../c/./"), "/a/c/");
    assert_eq!(sigv4::canonical_uri("/a/.."), "/");
    // A Lambda invocation path, as in smithy-rs `double-url-encode`.
    let lambda =
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations";
    assert_eq!(
        sigv4::canonical_uri(lambda),
        "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations"
    );
    // The query: decoded then encoded once, sorted by name then value; `+` is a plus.
    assert_eq!(sigv4::canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
    assert_eq!(sigv4::canonical_query("%E1%88%B4=x&k=a%2Fb/c"), "%E1%88%B4=x&k=a%2Fb%2Fc");
    assert_eq!(sigv4::canonical_query("q=a+b&r=a%20b"), "q=a%2Bb&r=a%20b");
    assert_eq!(sigv4::canonical_query(""), "");
}

#[test]
fn malformed_or_mismatched_requests_name_the_problem() {
    let v = VECTORS.iter().find(|v| v.name == "post-x-www-form-urlencoded").unwrap();
    let good = Req::parse(v.signed_request);
    let with = |f: &dyn Fn(&mut Req)| {
        let mut r = good.clone();
        f(&mut r);
        r.verify(&v.key).unwrap_err()
    };
    let set = |name: &'static str, value: &'static str| {
        move |r: &mut Req| {
            let i = r.header_index(name);
            r.headers[i].1 = value.to_string();
        }
    };
    let why = with(&|r| r.body = b"Param1=value2".to_vec());
    assert!(why.contains("x-amz-content-sha256"), "{why}");
    let why = with(&set("x-amz-date", "20150831T123600Z"));
    assert!(why.contains("credential date"), "{why}");
    let why = with(&set("x-amz-date", "2015-08-30T12:36:00Z"));
    assert!(why.contains("not YYYYMMDDTHHMMSSZ"), "{why}");
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;content-type;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b";
    let why = with(&set("authorization", auth));
    assert!(why.contains("not sorted"), "{why}");
    let why = with(&set("authorization", "AWS4-HMAC-SHA1 Credential=x"));
    assert!(why.contains("not AWS4-HMAC-SHA256"), "{why}");
    let why = with(&|r| r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type")));
    assert!(why.contains("signed header \"content-type\" is not in the request"), "{why}");
    // A wrong signature reports what was computed.
    let why = with(&|r| {
        let i = r.header_index("authorization");
        r.headers[i].1 = r.headers[i].1.replace("Signature=d", "Signature=e");
    });
    assert!(why.contains("--- canonical request\nPOST\n/\n\ncontent-length:13\n"), "{why}");
    assert!(why.contains("--- string to sign\nAWS4-HMAC-SHA256\n20150830T123600Z\n"), "{why}");
}
