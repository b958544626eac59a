//! Header transforms as the request path applies them: compiled once from a route's or
//! an upstream's `request_headers` / `response_headers` (names and values already
//! checked and built; secrets marked sensitive), applied as `set`, then `add`, then
//! `remove`.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::FileHeaders;

#[derive(Default)]
pub struct HeaderOps {
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
    remove: Box<[HeaderName]>,
}

impl HeaderOps {
    pub fn compile(file: &FileHeaders) -> HeaderOps {
        let values = |list: &[(HeaderName, crate::config::FileValue)]| {
            list.iter().map(|(n, v)| (n.clone(), v.value.clone())).collect()
        };
        HeaderOps { set: values(&file.set), add: values(&file.add), remove: file.remove.clone().into() }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.set.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in self.add.iter() {
            headers.append(name.clone(), value.clone());
        }
        for name in self.remove.iter() {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(text: &str) -> HeaderOps {
        let cfg = crate::config::parse(
            std::path::Path::new("t.toml"),
            &format!("[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\nrequest_headers = {text}\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}]\n"),
        )
        .unwrap();
        HeaderOps::compile(&cfg.upstreams[0].request_headers)
    }

    #[test]
    fn set_replaces_add_appends_remove_deletes() {
        let ops = ops(r#"{ set = { "x-env" = "prod" }, add = { "x-tag" = "b" }, remove = ["X-Debug"] }"#);
        let mut h = HeaderMap::new();
        h.append("x-env", HeaderValue::from_static("dev"));
        h.append("x-env", HeaderValue::from_static("test"));
        h.append("x-tag", HeaderValue::from_static("a"));
        h.append("x-debug", HeaderValue::from_static("1"));
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-env").iter().collect::<Vec<_>>(), ["prod"]);
        assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(h.get("x-debug").is_none());
    }
}
