//! Finding AWS credentials the way the AWS CLI does for two of its sources: the
//! environment, then the shared credentials file. Error messages name the variables,
//! file and profile tried, never a value read from them (the access key id excepted:
//! it is not a secret, but no message here needs it either).

use std::path::PathBuf;

use super::AwsCredentials;

/// Where credentials were found (a reloader watches the file and re-reads on change).
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    Environment,
    /// The shared credentials file at `path`, section `[profile]`.
    File { path: PathBuf, profile: String },
}

/// Load credentials: the environment when `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` are both set (`AWS_SESSION_TOKEN`, or the older
/// `AWS_SECURITY_TOKEN`, optional); else the profile `AWS_PROFILE` (default `default`)
/// of the INI file at `AWS_SHARED_CREDENTIALS_FILE` (a leading `~/` is the home
/// directory; default `$HOME/.aws/credentials`): keys `aws_access_key_id`,
/// `aws_secret_access_key`, `aws_session_token` (or `aws_security_token`). The file has
/// `[name]` sections; lines starting with `#` or `;` are comments, as is the rest of a
/// line from a `#` or `;` that follows whitespace; whitespace around names, `=` and
/// values is ignored; key names are case-insensitive; a repeated section continues the
/// first. Empty values count as unset.
///
/// `env` looks a variable up (tests pass a map instead of the process environment).
/// `Err` is a one-line reason naming what was tried, never a secret.
pub fn load_credentials(env: &dyn Fn(&str) -> Option<String>) -> Result<(AwsCredentials, CredentialSource), String> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    let (access_key_id, secret) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"));
    let env_state = match (access_key_id, secret) {
        (Some(access_key_id), Some(secret)) => {
            let token = var("AWS_SESSION_TOKEN").or_else(|| var("AWS_SECURITY_TOKEN"));
            return Ok((AwsCredentials::new(access_key_id, secret, token), CredentialSource::Environment));
        }
        (None, None) => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
        (Some(_), None) => "AWS_SECRET_ACCESS_KEY is not set (AWS_ACCESS_KEY_ID is)",
        (None, Some(_)) => "AWS_ACCESS_KEY_ID is not set (AWS_SECRET_ACCESS_KEY is)",
    };
    let fail = |why: String| format!("no AWS credentials: {env_state}, and {why}");
    let home = var("HOME").or_else(|| var("USERPROFILE"));
    let (path, path_origin) = match var("AWS_SHARED_CREDENTIALS_FILE") {
        Some(file) => match (file.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => (PathBuf::from(home).join(rest), "AWS_SHARED_CREDENTIALS_FILE"),
            (Some(_), None) => {
                return Err(fail(format!("AWS_SHARED_CREDENTIALS_FILE {file} starts with ~/ but HOME is not set")))
            }
            (None, _) => (PathBuf::from(file), "AWS_SHARED_CREDENTIALS_FILE"),
        },
        None => match &home {
            Some(home) => (PathBuf::from(home).join(".aws").join("credentials"), "the default"),
            None => return Err(fail("neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set".into())),
        },
    };
    let (profile, profile_origin) = match var("AWS_PROFILE") {
        Some(profile) => (profile, "AWS_PROFILE"),
        None => ("default".to_owned(), "the default"),
    };
    let file = format!("the shared credentials file {} ({path_origin})", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("{file} cannot be read: {e}")))?;
    let credentials = profile_credentials(&text, &profile).map_err(|why| {
        let why = match why {
            ProfileError::Syntax(line) => format!("{file} is malformed at line {line}"),
            ProfileError::NoProfile => format!("{file} has no profile [{profile}] ({profile_origin})"),
            ProfileError::Missing(key) => format!("profile [{profile}] ({profile_origin}) in {file} has no {key}"),
        };
        fail(why)
    })?;
    Ok((credentials, CredentialSource::File { path, profile }))
}

#[derive(Debug, PartialEq)]
enum ProfileError {
    /// The 1-based line that is neither a comment, a section header nor `key = value`.
    Syntax(usize),
    NoProfile,
    /// The key the profile lacks.
    Missing(&'static str),
}

/// The credentials of section `[profile]` of a shared credentials file.
fn profile_credentials(text: &str, profile: &str) -> Result<AwsCredentials, ProfileError> {
    let (mut found, mut in_profile) = (false, false);
    let (mut access_key_id, mut secret, mut token, mut legacy_token) = (None, None, None, None);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let (name, rest) = header.split_once(']').ok_or(ProfileError::Syntax(index + 1))?;
            let rest = rest.trim_start();
            if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
                return Err(ProfileError::Syntax(index + 1));
            }
            in_profile = name.trim() == profile;
            found |= in_profile;
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(ProfileError::Syntax(index + 1))?;
        if !in_profile {
            continue;
        }
        let value = strip_inline_comment(value).trim();
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key_id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            "aws_security_token" => legacy_token = value,
            _ => {}
        }
    }
    if !found {
        return Err(ProfileError::NoProfile);
    }
    let access_key_id = access_key_id.ok_or(ProfileError::Missing("aws_access_key_id"))?;
    let secret = secret.ok_or(ProfileError::Missing("aws_secret_access_key"))?;
    Ok(AwsCredentials::new(access_key_id, secret, token.or(legacy_token)))
}

/// `value` up to a `#` or `;` that follows whitespace.
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    let comment = (1..bytes.len()).find(|&i| matches!(bytes[i], b'#' | b';') && bytes[i - 1].is_ascii_whitespace());
    comment.map_or(value, |i| &value[..i])
}
