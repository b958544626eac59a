//! A compiled route and the per-request choice of its backend: overrides first, then the
//! sticky assignment when the request carries a key, then the per-request split.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderName, HeaderValue};

use super::fields::{text, Fields};
use super::split::Split;
use super::sticky;
use crate::telemetry::{BackendMetrics, StatusCounters};
use crate::upstream::Upstream;

/// A compiled `[[routes]]` entry.
pub struct Route {
    pub name: Arc<str>,
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// The route's backends in file order, then any upstream only an override names
    /// (weight 0, so it gets no split or sticky traffic).
    pub backends: Box<[Backend]>,
    pub split: Split,
    pub sticky: Option<Sticky>,
    pub overrides: Box<[Override]>,
    pub version_header: Option<HeaderName>,
    /// Responses the proxy makes itself on this route (no upstream answered).
    pub own_responses: Arc<StatusCounters>,
    /// Shadow traffic, when configured.
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
    /// No mirror, no transform, and every backend's upstream speaks plain HTTP/1.1 with
    /// nothing to transform: the HTTP/1.1 fast path can carry this route's requests
    /// (decided here, not per request).
    pub plain_h1: bool,
    pub rewrite: Option<super::Rewrite>,
    /// Answered by the proxy (such a route has no backends).
    pub redirect: Option<super::Redirect>,
    /// Applied before the upstream's.
    pub request_headers: crate::transform::HeaderOps,
    /// Applied after the upstream's.
    pub response_headers: crate::transform::HeaderOps,
}

/// An upstream inside a route, with its resolved share and pre-resolved metric handles.
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: f64,
    /// Share in units of 1/[`super::RESOLUTION`]; the sticky weight too.
    pub share: u32,
    /// This backend's constant in the sticky hash (see [`sticky`]).
    pub seed: u64,
    /// Where the weight came from.
    pub source: Source,
    pub metrics: Arc<BackendMetrics>,
    /// Version groups of the upstream (a rolling update in progress, seen through
    /// `health.version_header`): each a backend of its own (its version's endpoints,
    /// metrics and seed), chosen after this one. Empty: no groups.
    pub groups: Box<[Backend]>,
    /// As a version group: its weight inside the upstream (its healthy endpoints).
    pub group_weight: u32,
}

/// Who set a backend's weight (shown by `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Admin,
    Rollout,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
            Source::Rollout => "rollout",
        }
    }
}

pub enum Sticky {
    Cookie {
        name: Box<str>,
        /// `; Path=/; Max-Age=…; HttpOnly; SameSite=Lax`, built once.
        attributes: Box<str>,
    },
    Header(HeaderName),
    SourceIp,
}

pub struct Override {
    pub on: OverrideOn,
    pub value: Option<Box<str>>,
    /// Index into [`Route::backends`].
    pub backend: usize,
}

pub enum OverrideOn {
    Header(HeaderName),
    Cookie(Box<str>),
}

/// The outcome of [`Route::select`].
pub struct Choice {
    pub backend: usize,
    /// The version group within that backend (0 when it has none).
    pub group: usize,
    /// A new sticky cookie to send back, when the client had none (or a bad one).
    pub set_cookie: Option<HeaderValue>,
}

/// Keys we issue are 32 hex digits; we accept any reasonable token a client (or a test
/// harness) sets, and replace anything else.
const MAX_KEY: usize = 128;

impl Route {
    pub fn headers_match<F: Fields + ?Sized>(&self, headers: &F) -> bool {
        self.headers.iter().all(|(name, want)| headers.values(name).any(|v| v == want.as_bytes()))
    }

    /// The backend for this request.
    pub fn select<F: Fields + ?Sized>(&self, headers: &F, client: IpAddr, tls: bool) -> Choice {
        let (backend, key, set_cookie) = self.pick(headers, client, tls);
        let group = self.backends[backend].group_for(key);
        Choice { backend, group, set_cookie }
    }

    /// What serves a choice: the backend, or the version group chosen within it.
    #[inline]
    pub fn target(&self, choice: &Choice) -> &Backend {
        let b = &self.backends[choice.backend];
        b.groups.get(choice.group).unwrap_or(b)
    }

    /// The backend, the sticky key's hash (when there is one) and a new cookie.
    fn pick<F: Fields + ?Sized>(
        &self,
        headers: &F,
        client: IpAddr,
        tls: bool,
    ) -> (usize, Option<u64>, Option<HeaderValue>) {
        for o in self.overrides.iter() {
            if o.matches(headers) {
                if self.backends[o.backend].groups.len() < 2 {
                    return (o.backend, None, None);
                }
                // An override's upstream in a rolling update: the user's own key still
                // picks the version group, so a tester does not flip between versions;
                // one without a sticky cookie yet is given one here.
                return match (self.key_hash(headers, client), &self.sticky) {
                    (Some(h), _) => (o.backend, Some(h), None),
                    (None, Some(Sticky::Cookie { name, attributes })) => {
                        let (key, set_cookie) = new_cookie(name, attributes, tls);
                        (o.backend, Some(sticky::key_hash(&key)), set_cookie)
                    }
                    (None, _) => (o.backend, None, None),
                };
            }
        }
        let Some(sticky) = &self.sticky else {
            return (self.split.pick(), None, None);
        };
        match sticky {
            Sticky::Header(name) => match headers.first(name) {
                Some(v) => self.assign(v),
                None => (self.split.pick(), None, None),
            },
            Sticky::SourceIp => match client.to_canonical() {
                IpAddr::V4(v4) => self.assign(&v4.octets()),
                IpAddr::V6(v6) => self.assign(&v6.octets()),
            },
            Sticky::Cookie { name, attributes } => match cookie(headers, name).filter(|k| valid_key(k)) {
                Some(key) => self.assign(key.as_bytes()),
                None => {
                    let (key, set_cookie) = new_cookie(name, attributes, tls);
                    let (backend, hash, _) = self.assign(&key);
                    (backend, hash, set_cookie)
                }
            },
        }
    }

    /// The hash of the client's sticky key, when the route is sticky and it has one.
    fn key_hash<F: Fields + ?Sized>(&self, headers: &F, client: IpAddr) -> Option<u64> {
        match self.sticky.as_ref()? {
            Sticky::Header(name) => headers.first(name).map(sticky::key_hash),
            Sticky::SourceIp => Some(match client.to_canonical() {
                IpAddr::V4(v4) => sticky::key_hash(&v4.octets()),
                IpAddr::V6(v6) => sticky::key_hash(&v6.octets()),
            }),
            Sticky::Cookie { name, .. } => {
                cookie(headers, name).filter(|k| valid_key(k)).map(|k| sticky::key_hash(k.as_bytes()))
            }
        }
    }

    /// The sticky backend for a key (rendezvous hashing over the live shares), and the
    /// key's hash for the choice of version group.
    fn assign(&self, key: &[u8]) -> (usize, Option<u64>, Option<HeaderValue>) {
        if let Split::Single(i) = self.split {
            // Hash only when a choice of version group needs it.
            let h = (self.backends[i].groups.len() > 1).then(|| sticky::key_hash(key));
            return (i, h, None);
        }
        let h = sticky::key_hash(key);
        let backend =
            sticky::assign(h, self.backends.iter().map(|b| (b.seed, b.share))).unwrap_or_else(|| self.split.pick());
        (backend, Some(h), None)
    }
}

/// A new sticky key and the `Set-Cookie` value that hands it to the client.
fn new_cookie(name: &str, attributes: &str, tls: bool) -> ([u8; 32], Option<HeaderValue>) {
    let key = new_key();
    let secure = if tls { "; Secure" } else { "" };
    let value = format!("{name}={}{attributes}{secure}", std::str::from_utf8(&key).expect("hex"));
    (key, HeaderValue::from_str(&value).ok())
}

impl Backend {
    /// The version group for a request: by the sticky key's rendezvous over the groups'
    /// weights (a user moves only onto a group that grew or off one that shrank: during
    /// a rolling update, old to new, once), else at random by weight.
    #[inline]
    fn group_for(&self, key: Option<u64>) -> usize {
        if self.groups.len() < 2 {
            return 0;
        }
        let weights = self.groups.iter().map(|g| (g.seed, g.group_weight));
        if let Some(h) = key {
            return sticky::assign(h, weights).unwrap_or(0);
        }
        let total: u32 = self.groups.iter().map(|g| g.group_weight).sum();
        let mut at = fastrand::u32(..total.max(1));
        for (i, g) in self.groups.iter().enumerate() {
            if at < g.group_weight {
                return i;
            }
            at -= g.group_weight;
        }
        0
    }
}

impl Override {
    fn matches<F: Fields + ?Sized>(&self, headers: &F) -> bool {
        let want = self.value.as_deref();
        match &self.on {
            OverrideOn::Header(name) => match want {
                None => headers.contains(name),
                Some(w) => headers.values(name).any(|v| v == w.as_bytes()),
            },
            OverrideOn::Cookie(name) => match (cookie(headers, name), want) {
                (Some(_), None) => true,
                (Some(v), Some(w)) => v == w,
                (None, _) => false,
            },
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, without allocating.
pub fn cookie<'h, F: Fields + ?Sized>(headers: &'h F, name: &str) -> Option<&'h str> {
    headers.values(&COOKIE).filter_map(text).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// 128 random bits as 32 hex digits.
fn new_key() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    std::array::from_fn(|i| HEX[((n >> (4 * (31 - i))) & 0xf) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; sy_shop=abc123 ; b=2"));
        h.append(COOKIE, HeaderValue::from_static("c=\"quoted\""));
        assert_eq!(cookie(&h, "sy_shop"), Some("abc123"));
        assert_eq!(cookie(&h, "c"), Some("quoted"));
        assert_eq!(cookie(&h, "sy"), None);
    }

    #[test]
    fn keys() {
        assert!(valid_key("0123456789abcdef0123456789abcdef"));
        assert!(valid_key("user-42"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"a".repeat(MAX_KEY + 1)));
        assert!(!valid_key("a b"));
        assert!(!valid_key("<script>"));
        let k = new_key();
        assert!(k.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(new_key(), k);
    }
}
