//! The config pipeline: text ─parse─▶ spanned TOML tree ─decode─▶ [`FileConfig`]
//! ─validate─▶ accepted, or every problem as `PATH:LINE:COL: field: message`.
//!
//! Decoding reads the spanned tree by hand (see `reader.rs`) instead of deriving serde,
//! because derive stops at the first problem and operators fixing a file want them all.
//! Unknown keys are errors. Compiling the accepted file into the live snapshot is
//! [`crate::snapshot`]'s job.

mod auth;
mod cluster;
mod delivery;
mod duration;
mod error;
mod file;
mod reader;
mod resilience;
mod route;
mod suggest;
mod tls;
mod transform;
mod validate;

use std::path::Path;

pub use auth::{FileAuth, DEFAULT_SIGNED_BODY};
pub use cluster::FileCluster;
pub use delivery::{Compare, FileMirror, FileRollout};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use file::{
    FileAdmin, FileConfig, FileEndpoint, FileServer, FileUpstream, HostHeader, Protocol, Secret, DEFAULT_TOKEN_ENV,
};
pub use resilience::{FileHealth, FileLimits, FileOutlier, RetryOn};
pub use route::{FileBackend, FileOverride, FileRoute, FileSticky, OverrideOn};
pub use tls::FileTlsListener;
pub use transform::{FileHeaders, FileRedirect, FileRewrite, FileValue, Pattern, ValueFrom};

use error::Collector;

/// Read, decode and validate a config file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            field: String::new(),
            message: format!("cannot read config file: {e}"),
        }])),
    }
}

/// Decode and validate config text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigErrors> {
    decode_with(Collector::new(path, text), text).0
}

/// Every key path the decoder looks for while decoding `text` (present or not), with
/// user-chosen names as `*` (`upstreams.*.tls`): what the configuration reference in
/// the README must cover (its test compares the two).
pub fn keys_asked(text: &str) -> std::collections::BTreeSet<String> {
    let mut errs = Collector::new(Path::new("keys.toml"), text);
    errs.catalog = Some(Default::default());
    decode_with(errs, text).1.unwrap_or_default()
}

fn decode_with(
    mut errs: Collector,
    text: &str,
) -> (Result<FileConfig, ConfigErrors>, Option<std::collections::BTreeSet<String>>) {
    let root = match toml::de::DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            errs.push(span, "", format!("TOML syntax error: {}", e.message().trim()));
            return (Err(ConfigErrors(errs.finish())), None);
        }
    };
    let cfg = file::decode(&root, &mut errs);
    validate::validate(&cfg, &mut errs);
    let catalog = errs.catalog.take();
    let result = if errs.is_empty() { Ok(cfg) } else { Err(ConfigErrors(errs.finish())) };
    (result, catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn minimal_config_is_accepted() {
        let cfg = parse(
            Path::new("t.toml"),
            r#"
            [upstreams.a]
            endpoints = ["127.0.0.1:1"]
            [[routes]]
            name = "r"
            backends = [{ upstream = "a", weight = 1 }]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.routes[0].path_prefix, "/");
        assert_eq!(cfg.upstreams[0].version, "a");
    }

    #[test]
    fn typos_get_a_suggestion() {
        let text = "[server]\ndrain_timout = \"5s\"\n[upstreams.shop-v1]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"shop-1\" }]\n";
        let joined = errors(text).join("\n");
        assert!(
            joined.contains(
                "t.toml:2:1: server.drain_timout: unknown key `drain_timout` (did you mean `drain_timeout`?)"
            ),
            "{joined}"
        );
        assert!(joined.contains("unknown upstream \"shop-1\" (did you mean \"shop-v1\"?)"), "{joined}");
    }

    #[test]
    fn every_error_is_reported_with_position_and_field() {
        let text = "[server]\nlisten = [\"nope\"]\nbogus = 1\n\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\ntls = { ca_file = \"missing.pem\" }\n\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"zz\", weight = 0 }]\n\n[[routes]]\nname = \"r\"\nbackends = [{ upstream = \"a\", weight = -1 }, { upstream = \"a\" }]\n";
        let errs = errors(text);
        let joined = errs.join("\n");
        assert!(joined.contains("t.toml:2:11: server.listen: invalid address"), "{joined}");
        assert!(joined.contains("t.toml:3:1: server.bogus: unknown key"), "{joined}");
        assert!(joined.contains("t.toml:7:19: upstreams.a.tls.ca_file: cannot read missing.pem"), "{joined}");
        assert!(joined.contains("t.toml:11:26: routes[0].backends[0].upstream: unknown upstream \"zz\""), "{joined}");
        assert!(joined.contains("routes[0].backends: every weight is 0"), "{joined}");
        assert!(joined.contains("t.toml:14:8: routes[1].name: duplicate route name"), "{joined}");
        assert!(joined.contains("weights must not be negative"), "{joined}");
        assert!(joined.contains("listed twice"), "{joined}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errs = errors("[server\nlisten = 1");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:1:"), "{errs:?}");
    }
}
