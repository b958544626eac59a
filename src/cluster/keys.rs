//! Where a fleet's keys live under its prefix (names are percent-encoded: route names
//! have no charset rule, and a `/` in one must not open a new level).
//!
//! | key | lease | written by |
//! | --- | --- | --- |
//! | `P/state/routes/<route>` | none | compare-and-swap by any replica's API; fenced by the decider |
//! | `P/members/<name>` | the member's | the member, after every revision it applies |
//! | `P/tallies/<route>/<name>` | the member's | the member, at most once a second while a rollout runs |
//! | `P/decider` (election name) | the candidate's | etcd's election service |

use crate::routing::path::percent_decode;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }

    pub fn state(&self) -> String {
        format!("{}/state/routes/", self.prefix)
    }

    pub fn route(&self, route: &str) -> String {
        format!("{}{}", self.state(), encode(route))
    }

    /// The route a state key names.
    pub fn route_of(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.state().as_bytes())?;
        percent_decode(std::str::from_utf8(rest).ok()?)
    }

    pub fn members(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn member(&self, name: &str) -> String {
        format!("{}{}", self.members(), encode(name))
    }

    pub fn tallies(&self, route: &str) -> String {
        format!("{}/tallies/{}/", self.prefix, encode(route))
    }

    pub fn tally(&self, route: &str, member: &str) -> String {
        format!("{}{}", self.tallies(route), encode(member))
    }

    pub fn decider(&self) -> String {
        format!("{}/decider", self.prefix)
    }
}

/// Bytes outside `[A-Za-z0-9._-]` as `%XX`.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_round_trip_through_keys() {
        let keys = Keys::new("/sy/prod");
        for name in ["checkout", "api/v2 ünï", "a%b", ""] {
            let key = keys.route(name);
            assert!(!key["/sy/prod/state/routes/".len()..].contains('/'), "{key}");
            assert_eq!(keys.route_of(key.as_bytes()).as_deref(), Some(name));
        }
        assert_eq!(keys.route_of(b"/sy/prod/members/x"), None);
    }
}
