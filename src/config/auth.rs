//! An upstream's `auth`: how the proxy identifies itself to a function URL. Credentials
//! and token settings are read here, when the config loads (a missing credential is a
//! config error, and the request path never reads the environment or a file).

use std::path::PathBuf;

use super::error::Collector;
use super::reader::Table;
use super::transform::{header_value, FileValue};
use crate::auth::aws::{load_credentials, AwsCredentials, CredentialSource};
use crate::auth::gcp::DEFAULT_METADATA_HOST;

/// `max_body_bytes` when not given: bodies are buffered to be hashed.
pub const DEFAULT_SIGNED_BODY: u64 = 1_048_576;
/// A signed body is held in memory whole: 64 MiB at most.
pub const MAX_SIGNED_BODY: u64 = 64 * 1_048_576;

#[derive(Debug, Clone, PartialEq)]
pub enum FileAuth {
    AwsSigV4 {
        region: String,
        service: String,
        max_body_bytes: u64,
        credentials: AwsCredentials,
        /// A credentials file is watched: a change reloads the config.
        source: CredentialSource,
    },
    GcpIdToken {
        audience: String,
        /// `GCE_METADATA_HOST` when the config loaded, else the standard name.
        metadata_host: String,
    },
    /// The token itself (sent as `Bearer <value>`), from a file or the environment.
    Bearer(FileValue),
}

impl FileAuth {
    /// Files this auth reads (the reloader watches them).
    pub fn files(&self) -> Option<&PathBuf> {
        match self {
            FileAuth::AwsSigV4 { source: CredentialSource::File { path, .. }, .. } => Some(path),
            FileAuth::Bearer(FileValue { from: super::ValueFrom::File(path), .. }) => Some(path),
            _ => None,
        }
    }
}

pub(crate) fn decode_auth(mut t: Table<'_, '_>, errs: &mut Collector) -> Option<FileAuth> {
    let field = t.path.clone();
    let span = t.span.clone();
    let aws = t.table("aws_sigv4", errs);
    let gcp = t.table("gcp_id_token", errs);
    let bearer = t.get("bearer");
    let chosen = usize::from(aws.is_some()) + usize::from(gcp.is_some()) + usize::from(bearer.is_some());
    let bearer_field = t.field("bearer");
    t.finish(errs);
    if chosen != 1 {
        errs.push(span, field, "choose exactly one of `aws_sigv4`, `gcp_id_token` or `bearer`");
        return None;
    }
    if let Some(mut a) = aws {
        let span = a.span.clone();
        let region = a.string("region", errs);
        let service = a.string("service", errs);
        let max_body_bytes = a.uint("max_body_bytes", errs).unwrap_or(DEFAULT_SIGNED_BODY);
        if !(1..=MAX_SIGNED_BODY).contains(&max_body_bytes) {
            errs.push(span.clone(), a.field("max_body_bytes"), format!("from 1 to {MAX_SIGNED_BODY} (it is buffered)"));
        }
        let field = a.path.clone();
        a.finish(errs);
        let (Some(region), Some(service)) = (region, service) else {
            errs.push(
                span,
                field,
                "`region` and `service` are required (e.g. region = \"eu-west-1\", service = \"lambda\")",
            );
            return None;
        };
        return match load_credentials(&|name| std::env::var(name).ok()) {
            Ok((credentials, source)) => Some(FileAuth::AwsSigV4 {
                region: region.into_inner(),
                service: service.into_inner(),
                max_body_bytes,
                credentials,
                source,
            }),
            Err(why) => {
                errs.push(span, field, format!("no AWS credentials: {why}"));
                None
            }
        };
    }
    if let Some(mut g) = gcp {
        let span = g.span.clone();
        let audience = g.string("audience", errs);
        let field = g.path.clone();
        g.finish(errs);
        let Some(audience) = audience.filter(|a| !a.get_ref().is_empty()) else {
            errs.push(span, format!("{field}.audience"), "required: the URL of the service the token is for");
            return None;
        };
        let metadata_host = std::env::var("GCE_METADATA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string());
        return Some(FileAuth::GcpIdToken { audience: audience.into_inner(), metadata_host });
    }
    let node = bearer?;
    let value = header_value(node, &bearer_field, errs)?;
    if !value.is_secret() {
        errs.push(
            node.span(),
            bearer_field,
            "a bearer token is { file = \"PATH\" } or { env = \"NAME\" }, never written in the config",
        );
        return None;
    }
    Some(FileAuth::Bearer(value))
}
