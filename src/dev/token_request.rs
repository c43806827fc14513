//! The query of the dev issuer's `GET /token` (and of its Actions-style
//! ID-token endpoint), checked, and the dev repository ids.
//!
//! Even a local demo takes its input from a URL anybody on the machine can call,
//! so every value is checked before it lands in a signed token: the repository
//! is `owner/name` of `[A-Za-z0-9_.-]`, and free-text values are bounded and free
//! of control characters.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::DevError;

/// Longest `owner/name` accepted, like GitHub's limit of 100 characters per repository name.
const MAX_REPOSITORY_LEN: usize = 100;
/// Longest `ref`, `audience` or `environment` accepted.
const MAX_VALUE_LEN: usize = 255;
/// Longest `event_name` accepted.
const MAX_EVENT_NAME_LEN: usize = 64;
/// `ref` when the request names none.
const DEFAULT_REF: &str = "refs/heads/main";
/// Most digits of a `check_run_id` (GitHub's are 64-bit numbers).
const MAX_ID_DIGITS: usize = 20;
/// `event_name` when the request names none.
const DEFAULT_EVENT_NAME: &str = "push";

/// What to put in a dev token; the query string of `GET /token`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `owner/name`; parts of `[A-Za-z0-9_.-]`, at most 100 characters in all.
    pub repository: String,
    /// `ref` claim; default `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `event_name` claim; default `push`.
    pub event_name: Option<String>,
    /// `aud` claim; default: the issuer's default audience.
    pub audience: Option<String>,
    /// `environment` claim; absent by default (then `sub` names the ref).
    pub environment: Option<String>,
    /// `sha` claim (40 or 64 hex digits); random by default. `fetch` sends
    /// `GITHUB_SHA` and the broker checks it against this claim.
    pub sha: Option<String>,
    /// `check_run_id` claim (digits); random by default. `fetch --job-id`
    /// sends it and the broker checks it against this claim.
    pub check_run_id: Option<String>,
}

impl TokenRequest {
    /// A request for `repository` with every other claim at its default.
    pub fn new(repository: impl Into<String>) -> Self {
        Self {
            repository: repository.into(),
            ..Self::default()
        }
    }
}

/// A [`TokenRequest`] whose values passed the checks, defaults filled in.
#[derive(Clone, Copy, Debug)]
pub(super) struct CheckedRequest<'a> {
    /// `owner/name`.
    pub(super) repository: &'a str,
    /// The `owner` part.
    pub(super) owner: &'a str,
    /// `ref`, default `refs/heads/main`.
    pub(super) git_ref: &'a str,
    /// `event_name`, default `push`.
    pub(super) event_name: &'a str,
    /// `aud`, when the request names one.
    pub(super) audience: Option<&'a str>,
    /// `environment`, when the request names one.
    pub(super) environment: Option<&'a str>,
    /// `sha`, when the request names one.
    pub(super) sha: Option<&'a str>,
    /// `check_run_id`, when the request names one.
    pub(super) check_run_id: Option<&'a str>,
}

impl TokenRequest {
    /// Checks every value; the error names the first bad one.
    pub(super) fn check(&self) -> Result<CheckedRequest<'_>, DevError> {
        let (owner, _) = split_repository(&self.repository)?;
        let event_name = match self.event_name.as_deref() {
            None => DEFAULT_EVENT_NAME,
            Some(name) if is_event_name(name) => name,
            Some(_) => {
                return Err(DevError::InvalidRequest(format!(
                    "event_name must be 1-{MAX_EVENT_NAME_LEN} characters of [A-Za-z0-9_]"
                )));
            }
        };
        Ok(CheckedRequest {
            repository: &self.repository,
            owner,
            git_ref: checked(self.git_ref.as_deref(), "ref", MAX_VALUE_LEN)?.unwrap_or(DEFAULT_REF),
            event_name,
            audience: checked(self.audience.as_deref(), "audience", MAX_VALUE_LEN)?,
            environment: checked(self.environment.as_deref(), "environment", MAX_VALUE_LEN)?,
            sha: match self.sha.as_deref() {
                None => None,
                Some(sha) if is_sha(sha) => Some(sha),
                Some(_) => {
                    return Err(DevError::InvalidRequest(
                        "sha must be 40 or 64 lowercase hex digits".into(),
                    ));
                }
            },
            check_run_id: match self.check_run_id.as_deref() {
                None => None,
                Some(id) if is_digits(id, MAX_ID_DIGITS) => Some(id),
                Some(_) => {
                    return Err(DevError::InvalidRequest(format!(
                        "check_run_id must be 1-{MAX_ID_DIGITS} digits"
                    )));
                }
            },
        })
    }
}

/// Splits `owner/name`, each part one or more of `[A-Za-z0-9_.-]`, 100 characters at most.
fn split_repository(repository: &str) -> Result<(&str, &str), DevError> {
    let invalid = || {
        DevError::InvalidRequest(format!(
            "repository must be owner/name with parts of [A-Za-z0-9_.-], at most {MAX_REPOSITORY_LEN} characters"
        ))
    };
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(invalid());
    }
    let (owner, name) = repository.split_once('/').ok_or_else(invalid)?;
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if part_ok(owner) && part_ok(name) {
        Ok((owner, name))
    } else {
        Err(invalid())
    }
}

/// Accepts an absent value, or 1..=`max_len` characters without control characters.
fn checked<'a>(
    value: Option<&'a str>,
    name: &str,
    max_len: usize,
) -> Result<Option<&'a str>, DevError> {
    match value {
        None => Ok(None),
        Some(text)
            if !text.is_empty()
                && text.chars().count() <= max_len
                && !text.chars().any(char::is_control) =>
        {
            Ok(Some(text))
        }
        Some(_) => Err(DevError::InvalidRequest(format!(
            "{name} must be 1-{max_len} characters without control characters"
        ))),
    }
}

/// A commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_digits(text: &str, max_len: usize) -> bool {
    !text.is_empty() && text.len() <= max_len && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The dev `repository_id` of `owner/name`: 9 digits derived from the name, ASCII
/// case-insensitively (as GitHub compares names), so a policy can pin it.
pub fn dev_repository_id(repository: &str) -> String {
    derived_id("repository", repository, 100_000_000, 900_000_000)
}

/// The dev `repository_owner_id` of `owner`: 7 digits derived from the name, ASCII
/// case-insensitively, so a policy can pin it.
pub fn dev_owner_id(owner: &str) -> String {
    derived_id("owner", owner, 1_000_000, 9_000_000)
}

fn derived_id(kind: &str, name: &str, base: u64, span: u64) -> String {
    let digest = Sha256::digest(format!(
        "attestation-broker-dev/{kind}/{}",
        name.to_ascii_lowercase()
    ));
    let prefix = digest.first_chunk::<8>().copied().unwrap_or_default();
    (base + u64::from_be_bytes(prefix) % span).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_validated() {
        for good in ["octo/repo", "Octo-Org/my_repo.rs", "a/b", "o/.github"] {
            assert!(split_repository(good).is_ok(), "{good}");
        }
        let long = format!("owner/{}", "x".repeat(95));
        for bad in [
            "",
            "noslash",
            "/name",
            "owner/",
            "a/b/c",
            "a b/c",
            "o/r?x",
            "ö/r",
            long.as_str(),
        ] {
            assert!(split_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_deterministic_and_case_insensitive() {
        assert_eq!(
            dev_repository_id("Octo/Repo"),
            dev_repository_id("octo/repo")
        );
        assert_ne!(
            dev_repository_id("octo/repo"),
            dev_repository_id("octo/other")
        );
        assert_eq!(dev_repository_id("octo/repo").len(), 9);
        assert_eq!(dev_owner_id("octo").len(), 7);
        assert!(dev_owner_id("octo").chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn requests_get_defaults() {
        let request = TokenRequest::new("octo/repo");
        let checked = request.check().unwrap();
        assert_eq!(checked.owner, "octo");
        assert_eq!(checked.git_ref, "refs/heads/main");
        assert_eq!(checked.event_name, "push");
        assert_eq!(checked.audience, None);
        assert_eq!(checked.environment, None);
        assert_eq!(checked.sha, None);
        assert_eq!(checked.check_run_id, None);
        let bad = TokenRequest {
            event_name: Some("push;".into()),
            ..TokenRequest::new("octo/repo")
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn sha_and_check_run_id_are_checked() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let request = TokenRequest {
            sha: Some(sha.into()),
            check_run_id: Some("42".into()),
            ..TokenRequest::new("octo/repo")
        };
        let checked = request.check().unwrap();
        assert_eq!(checked.sha, Some(sha));
        assert_eq!(checked.check_run_id, Some("42"));
        for bad in [&sha[..39], "G".repeat(40).as_str(), &sha.to_uppercase()] {
            let request = TokenRequest {
                sha: Some(bad.into()),
                ..TokenRequest::new("octo/repo")
            };
            assert!(request.check().is_err(), "{bad}");
        }
        for bad in ["", "12a", "-1", &"9".repeat(21)] {
            let request = TokenRequest {
                check_run_id: Some(bad.into()),
                ..TokenRequest::new("octo/repo")
            };
            assert!(request.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn optional_values_are_checked() {
        assert_eq!(checked(None, "ref", 5).unwrap(), None);
        assert_eq!(checked(Some("ab"), "ref", 5).unwrap(), Some("ab"));
        assert!(checked(Some(""), "ref", 5).is_err());
        assert!(checked(Some("abcdef"), "ref", 5).is_err());
        assert!(checked(Some("a\nb"), "ref", 5).is_err());
        assert!(is_event_name("workflow_dispatch"));
        assert!(!is_event_name("push;"));
    }
}
