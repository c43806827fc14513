//! `[github]`: the broker as a GitHub App. Absent, nothing GitHub runs.
//!
//! Values are checked as they are read, like every other section. What the
//! private key file holds (a PKCS#1 or PKCS#8 RSA key) is checked by the
//! module that uses it (`github`), at start-up and by `check-config`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use url::Url;

use super::values;

/// GitHub's API root, the default of `api_url`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Longest `revoke_after_seconds`: GitHub's tokens live an hour, and the
/// broker must revoke before that.
pub(super) const MAX_REVOKE_AFTER_SECONDS: u64 = 3599;
/// Shortest `revoke_after_seconds`: a job needs the token for a while.
pub(super) const MIN_REVOKE_AFTER_SECONDS: u64 = 60;

/// `[github]`: the GitHub App the broker acts as.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// REST API root. Default `https://api.github.com`; GHES:
    /// `https://HOST/api/v3`. `http://` only on a loopback host.
    #[serde(default, deserialize_with = "api_url")]
    pub api_url: Option<Url>,
    /// The App's id (`123456`) or client id (`Iv1…`): the `iss` of its JWTs.
    pub app_id: AppId,
    /// PEM file of the App's private key (PKCS#1 or PKCS#8 RSA). Relative
    /// paths are taken from the configuration file's directory.
    pub private_key_file: PathBuf,
    /// Deadline of one GitHub API call, seconds. Default 5.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "values::within::<_, _, 1, 60>"
    )]
    pub request_timeout_seconds: u64,
    /// How long a passed context answer is reused, seconds; 0: never.
    /// Default 30.
    #[serde(
        default = "default_context_cache",
        deserialize_with = "values::within::<_, _, 0, 3600>"
    )]
    pub context_cache_seconds: u64,
    /// The broker revokes each token it issued this long after issuing it,
    /// seconds. Default 900; at least 60 and under 3600 (GitHub's own
    /// lifetime of an installation token).
    #[serde(
        default = "default_revoke_after",
        deserialize_with = "values::within::<_, _, MIN_REVOKE_AFTER_SECONDS, MAX_REVOKE_AFTER_SECONDS>"
    )]
    pub revoke_after_seconds: u64,
}

impl GithubConfig {
    /// The API root: `api_url`, or `https://api.github.com`.
    pub fn api_url(&self) -> Url {
        match &self.api_url {
            Some(url) => url.clone(),
            None => default_api_url(),
        }
    }
    /// Deadline of one API call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    /// How long a passed context answer is reused.
    pub fn context_cache(&self) -> Duration {
        Duration::from_secs(self.context_cache_seconds)
    }
    /// Time from issuing a token to revoking it.
    pub fn revoke_after(&self) -> Duration {
        Duration::from_secs(self.revoke_after_seconds)
    }
}

/// `https://api.github.com`.
#[expect(clippy::expect_used, reason = "a constant URL that parses")]
pub fn default_api_url() -> Url {
    Url::parse(DEFAULT_API_URL).expect("the default API URL parses")
}

fn default_request_timeout() -> u64 {
    5
}

fn default_context_cache() -> u64 {
    30
}

fn default_revoke_after() -> u64 {
    900
}

fn api_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Url>, D::Error> {
    let url = Url::deserialize(deserializer)?;
    values::check_scheme(&url).map_err(D::Error::custom)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(D::Error::custom("must not have a query or fragment"));
    }
    Ok(Some(url))
}

/// The App's identity as GitHub names it in the JWT `iss`: the numeric App
/// id or the client id (`Iv` followed by letters, digits and dots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppId(String);

const APP_ID_REASON: &str = "must be the App's numeric id or its client id (`Iv…`)";

impl AppId {
    /// Checks `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let numeric = !text.is_empty()
            && text.len() <= 20
            && text.bytes().all(|b| b.is_ascii_digit())
            && !text.starts_with('0');
        let client_id = text.len() > 2
            && text.len() <= 64
            && text.starts_with("Iv")
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        if numeric || client_id {
            Ok(Self(text.to_owned()))
        } else {
            Err(APP_ID_REASON.to_owned())
        }
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AppId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A number in TOML (or from `BROKER_GITHUB__APP_ID=123`) or a string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text =
            match Raw::deserialize(deserializer).map_err(|_| D::Error::custom(APP_ID_REASON))? {
                Raw::Number(number) => number.to_string(),
                Raw::Text(text) => text,
            };
        Self::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = include_str!("../../tests/fixtures/configs/minimal.toml");

    fn parse(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse(&format!("{MINIMAL}\n{extra}"), "broker.toml", &env)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn the_section_is_optional_and_has_documented_defaults() {
        assert!(parse("", &[]).unwrap().github.is_none());
        let config = parse(
            "[github]\napp_id = \"123456\"\nprivate_key_file = \"app.pem\"\n",
            &[],
        )
        .unwrap();
        let github = config.github.unwrap();
        assert_eq!(github.api_url().as_str(), "https://api.github.com/");
        assert_eq!(github.app_id.as_str(), "123456");
        assert_eq!(github.request_timeout_seconds, 5);
        assert_eq!(github.context_cache_seconds, 30);
        assert_eq!(github.revoke_after_seconds, 900);
    }

    #[test]
    fn every_key_can_come_from_the_environment() {
        let config = parse(
            "",
            &[
                ("BROKER_GITHUB__APP_ID", "42"),
                ("BROKER_GITHUB__PRIVATE_KEY_FILE", "/k.pem"),
                ("BROKER_GITHUB__API_URL", "https://ghes.example/api/v3"),
                ("BROKER_GITHUB__REQUEST_TIMEOUT_SECONDS", "3"),
                ("BROKER_GITHUB__CONTEXT_CACHE_SECONDS", "0"),
                ("BROKER_GITHUB__REVOKE_AFTER_SECONDS", "600"),
            ],
        )
        .unwrap();
        let github = config.github.unwrap();
        assert_eq!(github.app_id.as_str(), "42");
        assert_eq!(github.api_url().as_str(), "https://ghes.example/api/v3");
        assert_eq!(github.request_timeout_seconds, 3);
        assert_eq!(github.context_cache_seconds, 0);
        assert_eq!(github.revoke_after_seconds, 600);
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let message = parse(
            "[github]\napp_id = \"my-app\"\nprivate_key_file = \"k.pem\"\n\
             api_url = \"http://github.example\"\nrevoke_after_seconds = 3600\ncolour = 1\n",
            &[],
        )
        .unwrap_err();
        for expected in [
            "broker.toml: key `github.app_id`: must be the App's numeric id",
            "broker.toml: key `github.api_url`: http:// is accepted only for loopback hosts",
            "broker.toml: key `github.revoke_after_seconds`: must be between 60 and 3599",
            "broker.toml: key `github.colour`: unknown field",
        ] {
            assert!(message.contains(expected), "{expected}\n{message}");
        }
        let message = parse("[github]\napp_id = 1\n", &[]).unwrap_err();
        assert!(
            message.contains("key `github.private_key_file`: missing field"),
            "{message}"
        );
        let loopback = parse(
            "[github]\napp_id = 1\nprivate_key_file = \"k\"\napi_url = \"http://127.0.0.1:8080/\"\n",
            &[],
        );
        assert!(loopback.is_ok(), "{loopback:?}");
    }

    #[test]
    fn app_ids_are_numbers_or_client_ids() {
        for good in ["123456", "Iv1.8a61f9b3a7aba766", "Iv23liABC"] {
            assert_eq!(AppId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "0123", "abc", "Iv", "12 3", "Iv1/x"] {
            assert!(AppId::parse(bad).is_err(), "{bad}");
        }
    }
}
