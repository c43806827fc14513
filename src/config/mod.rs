//! Configuration: one TOML file plus `BROKER_SECTION__KEY` environment
//! overrides, turned into checked types at load time.
//!
//! Nothing else in the crate reads the environment: the loader takes the
//! variables as an argument, so tests pass their own map. Unknown keys are
//! errors (a typo in a ConfigMap must fail), every error names the file, the
//! key and the reason, and all errors are reported together: every value
//! that does not fit its type or range (see `collect`), then every
//! consistency problem among values that did.
//!
//! File paths in the file are taken relative to the file's own directory, so
//! a configuration works from any working directory; paths given in `BROKER_*`
//! variables are taken relative to the working directory, like any other path
//! typed on a command line. [`Config::file_paths`] lists every key that names
//! a file.
//!
//! This module is a leaf: it uses nothing else of the crate. Values are
//! checked as they are read (`values`): numbers against their range,
//! algorithms against the allow-list, URLs for their scheme, the Redis URL by
//! the redis crate. What a named file
//! holds is checked by the module that uses it (`tls`, `replay`), at start-up
//! and by `check-config`, through [`ConfigError::one`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

mod collect;
mod github;
mod values;

pub use github::{AppId, DEFAULT_API_URL, GithubConfig, default_api_url};
pub use values::{RedisUrl, check_scheme, parse_algorithm};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "BROKER_";
/// Separator between section and key in an override (`BROKER_SERVER__LISTEN`).
pub const ENV_SEPARATOR: &str = "__";

/// Hard cap on an inbound token (GitHub's are about 1–2 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The Rego query when `policy.rego_query` is not set: only the boolean
/// `true` allows.
pub const DEFAULT_REGO_QUERY: &str = "data.broker.allow";

/// Smallest `server.max_header_bytes`: hyper's HTTP/1 read buffer cannot be
/// smaller (it asserts), and 8 KiB still fits a Bearer token with room to spare.
pub const MIN_HEADER_BYTES: usize = 8192;

/// A configuration that failed to load: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem: `FILE: key `KEY`: REASON`.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// One problem with `key` of `file`; for checks made outside this module
    /// (a certificate that does not load, a Redis CA that is not usable), so
    /// that they stop the start-up with the same `FILE: key KEY: REASON` line.
    pub fn one(file: &str, key: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            problems: vec![format!("{file}: key `{key}`: {reason}")],
        }
    }

    /// A problem with the file as a whole (unreadable, not TOML): no key.
    fn whole_file(file: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            problems: vec![format!("{file}: {reason}")],
        }
    }
}

/// Where overridden keys came from: dotted key → environment variable.
type EnvSources = BTreeMap<String, String>;

/// A problem [`Config::validate`] found: at `key`, also depending on `reads`.
struct Inconsistency {
    key: String,
    reads: &'static [&'static str],
    reason: String,
}

/// Whether one dotted key is the other or holds it (`issuers` holds
/// `issuers[1].audiences`).
fn overlaps(a: &str, b: &str) -> bool {
    let holds = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    holds(a, b) || holds(b, a)
}

/// `FILE: key `KEY`: REASON`, naming the variable when the value came from one.
fn problem_line(file: &str, key: &str, sources: &EnvSources, reason: &str) -> String {
    match sources.get(key) {
        Some(name) => format!("{file}: key `{key}` (from environment {name}): {reason}"),
        None => format!("{file}: key `{key}`: {reason}"),
    }
}

/// The whole broker configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and inbound limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Trusted token issuers; at least one.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Token verification rules.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// Signing-key cache.
    #[serde(default)]
    pub jwks: JwksConfig,
    /// Replay protection.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// AWS STS client.
    #[serde(default)]
    pub sts: StsConfig,
    /// The policy file.
    pub policy: PolicyConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// The GitHub App; absent, nothing GitHub runs.
    #[serde(default)]
    pub github: Option<GithubConfig>,
}

/// `[server]`: listeners and inbound limits.
///
/// Every limit has a default meant for production; each bounds one resource a
/// caller could otherwise hold without limit (memory for heads and bodies,
/// connections for slow clients, tasks for requests, STS calls per repository).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Main listener (POST /issue). Default `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Admin listener (/metrics, /healthz, /readyz). Default `0.0.0.0:9090`.
    pub admin_listen: SocketAddr,
    /// PEM certificate chain (leaf first) for TLS on the main listener.
    /// Relative paths are taken from the configuration file's directory (from
    /// the working directory when set by a `BROKER_*` variable); the same
    /// holds for every path key.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes, seconds; 0 turns
    /// polling off (SIGHUP still reloads). Default 30.
    pub tls_reload_seconds: u64,
    /// Largest accepted request body. Default 65536.
    #[serde(deserialize_with = "values::within::<_, _, 1, 1048576>")]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers), bytes; larger heads
    /// get 431. Default 65536, like the body: a token too large to accept
    /// still reaches the handler and gets the documented JSON 401 whether it
    /// came in the body or as a Bearer header. At least 8192 (hyper's minimum
    /// buffer).
    #[serde(deserialize_with = "values::within::<_, _, { MIN_HEADER_BYTES as u64 }, 1048576>")]
    pub max_header_bytes: usize,
    /// Most request headers; more get 431. Default 64.
    #[serde(deserialize_with = "values::within::<_, _, 1, 1024>")]
    pub max_headers: usize,
    /// Time a client gets to complete the TLS handshake, and then each request
    /// head (also the idle time allowed between keep-alive requests), seconds.
    /// Default 10.
    #[serde(deserialize_with = "values::within::<_, _, 1, 300>")]
    pub header_read_timeout_seconds: u64,
    /// Time a client gets to send the whole request body once its head is in,
    /// milliseconds; past it the request gets 408 and the connection is
    /// closed. The body is read before the request takes one of the
    /// `max_concurrent_requests` places, so a slow sender never holds one.
    /// Default 5000, at most 60000.
    #[serde(deserialize_with = "values::within::<_, _, 1, 60000>")]
    pub body_read_timeout_ms: u64,
    /// Whole-request deadline, seconds. Default 15.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub request_timeout_seconds: u64,
    /// Requests processed at once before new ones are shed with 503. Default 1024.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub max_concurrent_requests: usize,
    /// Verified requests per repository (`repository_id` claim) per minute;
    /// beyond, 429 with Retry-After. 0 turns the limit off. Default 120.
    pub rate_limit_per_repository_per_minute: u32,
    /// Requests a repository may make at once before the per-minute rate
    /// applies. Default 120.
    pub rate_limit_burst: u32,
    /// Time allowed for in-flight requests after SIGTERM, seconds. Default 20.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            tls_reload_seconds: 30,
            max_body_bytes: 64 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 64,
            header_read_timeout_seconds: 10,
            body_read_timeout_ms: 5000,
            request_timeout_seconds: 15,
            max_concurrent_requests: 1024,
            rate_limit_per_repository_per_minute: 120,
            rate_limit_burst: 120,
            shutdown_grace_seconds: 20,
        }
    }
}

/// The files TLS on the main listener is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mTLS), if any.
    pub client_ca: Option<PathBuf>,
}

impl ServerConfig {
    /// The TLS files, when TLS is configured (validation guarantees both or neither).
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.client_ca.clone(),
        })
    }

    /// The slow-client deadline for a TLS handshake and for each request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// The slow-client deadline for a request body.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The drain deadline after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// `[[issuers]]`: one trusted OIDC issuer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// JWKS location; default: discovered from `{issuer}/.well-known/openid-configuration`.
    /// `https://`, or `http://` on a loopback host.
    #[serde(default, deserialize_with = "values::web_url")]
    pub jwks_url: Option<Url>,
}

/// `[verify]`: token verification.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Clock-skew allowance for exp, nbf and iat. Default 10 s: runner clocks
    /// drift a few seconds from ours, and a 5 s `nbf` skew was seen in
    /// production; more than a minute would stretch every token's life.
    #[serde(deserialize_with = "values::within::<_, _, 0, 300>")]
    pub leeway_seconds: u64,
    /// Accepted signature algorithms. Default `["RS256"]`. `none` and HMAC are
    /// refused whatever this says: they are not in the allow-list
    /// [`parse_algorithm`] reads each entry through.
    #[serde(deserialize_with = "values::algorithms")]
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            leeway_seconds: 10,
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
        }
    }
}

/// `[jwks]`: the signing-key cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// Background refresh period. Default 300.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub refresh_seconds: u64,
    /// Minimum time between fetches caused by unknown key ids, per issuer. Default 30.
    pub unknown_kid_cooldown_seconds: u64,
    /// How long the last good keys keep serving when fetches fail. Default 86400.
    pub max_stale_seconds: u64,
    /// Deadline of one discovery or JWKS fetch. Default 5.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub fetch_timeout_seconds: u64,
    /// Largest accepted discovery or JWKS body. Default 1 MiB.
    #[serde(deserialize_with = "values::within::<_, _, 1, 16777216>")]
    pub max_body_bytes: usize,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            refresh_seconds: 300,
            unknown_kid_cooldown_seconds: 30,
            max_stale_seconds: 86_400,
            fetch_timeout_seconds: 5,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Where used token ids are remembered.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStoreKind {
    /// In process; right for a single replica.
    #[default]
    Memory,
    /// Shared Redis; needed for several replicas.
    Redis,
}

/// `[replay]`: replay protection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// `memory` (default) or `redis`.
    pub store: ReplayStoreKind,
    /// Redis URL when `store = "redis"`: `redis://` or `rediss://` (TLS).
    pub redis_url: Option<RedisUrl>,
    /// PEM CA certificate(s) that alone are trusted for a `rediss://` server
    /// (a private CA); default none: the system roots. Relative paths are
    /// resolved against the config file's directory.
    pub redis_ca_file: Option<PathBuf>,
    /// Issue even when the store cannot be reached. Default false (fail closed).
    pub fail_open: bool,
    /// Most unexpired token ids remembered in memory (with Redis: this
    /// replica's own marks). When that many are held, new tokens are refused
    /// with 503 rather than forgetting a mark early. Default 1,000,000.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub max_entries: u64,
    /// Deadline of one Redis operation including pool wait and connect, ms. Default 500.
    #[serde(deserialize_with = "values::within::<_, _, 1, 10000>")]
    pub redis_timeout_ms: u64,
    /// Most Redis connections per replica. Default 16.
    #[serde(deserialize_with = "values::within::<_, _, 1, 1024>")]
    pub redis_pool_size: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            store: ReplayStoreKind::Memory,
            redis_url: None,
            redis_ca_file: None,
            fail_open: false,
            max_entries: 1_000_000,
            redis_timeout_ms: 500,
            redis_pool_size: 16,
        }
    }
}

/// `[sts]`: the AWS STS client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StsConfig {
    /// AWS region of the STS endpoint. Default `us-east-1`.
    pub region: String,
    /// Endpoint override for local emulators and tests (http only on loopback).
    #[serde(deserialize_with = "values::web_url")]
    pub endpoint_url: Option<Url>,
    /// TCP/TLS connect timeout, seconds. Default 2.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub connect_timeout_seconds: u64,
    /// Deadline of one AssumeRole including retries, seconds. Default 8.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub operation_timeout_seconds: u64,
    /// Deadline of one attempt, seconds. Default 3.
    #[serde(deserialize_with = "values::at_least::<_, _, 1>")]
    pub attempt_timeout_seconds: u64,
    /// Attempts per AssumeRole (throttling and 5xx are retried). Default 3.
    #[serde(deserialize_with = "values::within::<_, _, 1, 10>")]
    pub max_attempts: u32,
    /// AssumeRole calls in flight at once; more wait (within the operation
    /// deadline). Bounds connections to STS. Default 64.
    #[serde(deserialize_with = "values::within::<_, _, 1, 4096>")]
    pub max_concurrent_calls: usize,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            endpoint_url: None,
            connect_timeout_seconds: 2,
            operation_timeout_seconds: 8,
            attempt_timeout_seconds: 3,
            max_attempts: 3,
            max_concurrent_calls: 64,
        }
    }
}

/// `[policy]`: the policy file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Path of the policy TOML. Relative paths are taken from the
    /// configuration file's directory (from the working directory when set by
    /// a `BROKER_*` variable).
    pub file: PathBuf,
    /// How often the file is checked for changes, seconds; 0 turns polling off
    /// (SIGHUP still reloads). Default 5. Polling reads the file through any
    /// symlinks, so Kubernetes' ConfigMap symlink swap is seen.
    #[serde(default = "default_reload_seconds")]
    pub reload_seconds: u64,
    /// Optional Rego module evaluated after the built-in rules grant; both must allow.
    #[serde(default)]
    pub rego: Option<PathBuf>,
    /// The Rego query; only the boolean `true` allows. Default `data.broker.allow`.
    #[serde(default = "default_rego_query")]
    pub rego_query: String,
}

fn default_rego_query() -> String {
    DEFAULT_REGO_QUERY.to_owned()
}

fn default_reload_seconds() -> u64 {
    5
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines want).
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[log]`: log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (default) or `pretty`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `attestation_broker=debug`. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads `path`, applies overrides from `env`, validates the result and
    /// checks that every file it names exists. What the files hold is checked
    /// by the modules that use them (certificates by `tls`, the Redis CA by
    /// `replay`), at start-up and by `check-config`.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::whole_file(&file, format!("cannot read the configuration file: {err}"))
        })?;
        let (mut config, sources) = Self::parse_with_sources(&text, &file, env)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut problems = Vec::new();
        for (key, slot) in config.file_paths() {
            let Some(slot) = slot else {
                continue;
            };
            let from_env = sources.contains_key(key);
            let given = slot.clone();
            if given.is_relative() && !from_env {
                *slot = base.join(&given);
            }
            if let Err(err) = std::fs::metadata(&*slot) {
                let how = match (given.is_relative(), from_env) {
                    (false, _) => String::new(),
                    (true, true) => " (relative to the working directory)".to_owned(),
                    (true, false) => format!(
                        " ({} relative to the configuration file's directory)",
                        given.display()
                    ),
                };
                let reason = format!("cannot read {}{how}: {err}", slot.display());
                problems.push(problem_line(&file, key, &sources, &reason));
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every key that names a file, with its value when set. [`Config::load`]
    /// resolves relative values and checks that each exists; a new file key
    /// is one more line here.
    pub fn file_paths(&mut self) -> Vec<(&'static str, Option<&mut PathBuf>)> {
        vec![
            ("server.tls_cert", self.server.tls_cert.as_mut()),
            ("server.tls_key", self.server.tls_key.as_mut()),
            ("server.client_ca", self.server.client_ca.as_mut()),
            ("policy.file", Some(&mut self.policy.file)),
            ("policy.rego", self.policy.rego.as_mut()),
            ("replay.redis_ca_file", self.replay.redis_ca_file.as_mut()),
            (
                "github.private_key_file",
                self.github
                    .as_mut()
                    .map(|github| &mut github.private_key_file),
            ),
        ]
    }

    /// Parses configuration text; `file` names it in errors. Paths are left
    /// as written.
    pub fn parse(
        text: &str,
        file: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        Self::parse_with_sources(text, file, env).map(|(config, _)| config)
    }

    /// [`Config::parse`], also returning which keys the environment set.
    fn parse_with_sources(
        text: &str,
        file: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(Self, EnvSources), ConfigError> {
        // A syntax error stops here: nothing after it can be read reliably.
        let mut table: toml::Table = toml::from_str(text).map_err(|err| {
            let place = err
                .span()
                .map(|span| line_column(text, span.start))
                .map_or(String::new(), |(line, column)| {
                    format!("line {line}, column {column}: ")
                });
            ConfigError::whole_file(file, format!("{place}not valid TOML: {}", err.message()))
        })?;
        let (problems, sources) = apply_env_overrides(&mut table, env, file);
        let (config, found) = collect::deserialize_all::<Config>(table);
        // Keys whose value was not read as written: a default stands in for
        // it, and checks that read it would only report that default.
        let mut unread: Vec<String> = found.iter().map(|problem| problem.key.clone()).collect();
        unread.extend(problems.iter().map(|(key, _)| key.clone()));
        let mut problems: Vec<String> = problems.into_iter().map(|(_, line)| line).collect();
        problems.extend(
            found
                .iter()
                .map(|problem| problem_line(file, &problem.key, &sources, &problem.reason)),
        );
        let Some(config) = config else {
            return Err(ConfigError { problems });
        };
        let read_as_written = |key: &str| !unread.iter().any(|gone| overlaps(gone, key));
        problems.extend(
            config
                .validate()
                .into_iter()
                .filter(|found| {
                    read_as_written(&found.key)
                        && found.reads.iter().all(|key| read_as_written(key))
                })
                .map(|found| problem_line(file, &found.key, &sources, &found.reason)),
        );
        if problems.is_empty() {
            Ok((config, sources))
        } else {
            Err(ConfigError { problems })
        }
    }

    /// What the field types cannot say: problems that involve several
    /// values, or a list as a whole.
    fn validate(&self) -> Vec<Inconsistency> {
        let mut problems = Vec::new();
        // `reads`: the other keys the check depends on.
        let mut problem = |key: String, reads: &'static [&'static str], reason: String| {
            problems.push(Inconsistency { key, reads, reason });
        };
        if self.issuers.is_empty() {
            let reason = "at least one [[issuers]] entry is required";
            problem("issuers".into(), &[], reason.into());
        }
        // Keys of list entries hold their index: they read the whole list.
        for (index, issuer) in self.issuers.iter().enumerate() {
            let key = format!("issuers[{index}].issuer");
            match Url::parse(&issuer.issuer) {
                Ok(url) => {
                    if let Err(reason) = check_scheme(&url) {
                        problem(key.clone(), &["issuers"], reason);
                    }
                    if url.query().is_some() || url.fragment().is_some() {
                        let reason = "must not have a query or fragment";
                        problem(key.clone(), &["issuers"], reason.into());
                    }
                }
                Err(err) => problem(key.clone(), &["issuers"], format!("not a URL: {err}")),
            }
            let earlier = self.issuers.iter().take(index);
            if earlier
                .map(|other| &other.issuer)
                .any(|iss| *iss == issuer.issuer)
            {
                problem(key, &["issuers"], "listed twice".into());
            }
            if issuer.audiences.is_empty() || issuer.audiences.iter().any(String::is_empty) {
                let reason = "needs at least one non-empty audience";
                problem(
                    format!("issuers[{index}].audiences"),
                    &["issuers"],
                    reason.into(),
                );
            }
        }
        if self.verify.algorithms.is_empty() {
            let reason = "at least one algorithm is required";
            problem("verify.algorithms".into(), &[], reason.into());
        }
        if self.jwks.max_stale_seconds < self.jwks.refresh_seconds {
            let reason = "must be at least jwks.refresh_seconds";
            problem(
                "jwks.max_stale_seconds".into(),
                &["jwks.refresh_seconds"],
                reason.into(),
            );
        }
        let replay = &self.replay;
        let redis = replay.store == ReplayStoreKind::Redis;
        if redis && replay.redis_url.is_none() {
            let reason = "required when replay.store = \"redis\"";
            problem("replay.redis_url".into(), &["replay.store"], reason.into());
        }
        let rediss = replay.redis_url.as_ref().is_some_and(RedisUrl::is_tls);
        if replay.redis_ca_file.is_some() && !(redis && rediss) {
            let reason = "used only with replay.store = \"redis\" and a rediss:// URL";
            let reads = &["replay.store", "replay.redis_url"];
            problem("replay.redis_ca_file".into(), reads, reason.into());
        }
        if self.sts.region.is_empty() {
            problem("sts.region".into(), &[], "must not be empty".into());
        }
        let server = &self.server;
        if server.rate_limit_per_repository_per_minute > 0 && server.rate_limit_burst == 0 {
            let reason =
                "must be at least 1 when server.rate_limit_per_repository_per_minute is set";
            let reads = &["server.rate_limit_per_repository_per_minute"];
            problem("server.rate_limit_burst".into(), reads, reason.into());
        }
        let tls = &["server.tls_cert", "server.tls_key"];
        match (&server.tls_cert, &server.tls_key) {
            (Some(_), None) => {
                let reason = "required when server.tls_cert is set";
                problem("server.tls_key".into(), tls, reason.into());
            }
            (None, Some(_)) => {
                let reason = "required when server.tls_key is set";
                problem("server.tls_cert".into(), tls, reason.into());
            }
            _ => {}
        }
        if server.client_ca.is_some() && server.tls_cert.is_none() {
            let reason = "client certificates need TLS: set server.tls_cert and server.tls_key";
            problem("server.client_ca".into(), tls, reason.into());
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problem(
                "log.level".into(),
                &[],
                format!("not a valid filter: {err}"),
            );
        }
        problems
    }

    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_seconds)
    }
}

/// Applies `BROKER_SECTION__KEY=value` overrides. Values are read as TOML
/// (numbers, booleans, arrays) and fall back to a plain string. Array-of-table
/// sections take an index: `BROKER_ISSUERS__0__AUDIENCES='["a"]'`. Returns the
/// overrides that could not be applied (key and line) and the keys that were.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    file: &str,
) -> (Vec<(String, String)>, EnvSources) {
    let mut problems = Vec::new();
    let mut sources = EnvSources::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains(ENV_SEPARATOR) {
            continue;
        }
        let parts: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        let value = parse_env_value(raw);
        let mut key = String::new();
        match set_path(table, &parts, value, &mut key) {
            Ok(()) => {
                sources.insert(key, name.clone());
            }
            Err(reason) => {
                let key = parts.join(".");
                let line = format!("{file}: key `{key}` (from environment {name}): {reason}");
                problems.push((key, line));
            }
        }
    }
    (problems, sources)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |current| current.chars().count())
        + 1;
    (line, column)
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut parsed) => parsed
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Sets the value at `parts`; `key` receives its dotted name
/// (`issuers[0].audiences`), as type errors name it.
fn set_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
    key: &mut String,
) -> Result<(), String> {
    let Some((first, rest)) = parts.split_first() else {
        return Err("empty key".into());
    };
    if first.is_empty() {
        return Err("empty key".into());
    }
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(first);
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(inner) => set_path(inner, rest, value, key),
        toml::Value::Array(items) => {
            let Some((index, rest)) = rest.split_first() else {
                return Err("an array section needs an index".into());
            };
            let index: usize = index
                .parse()
                .map_err(|_| format!("`{index}` is not an array index"))?;
            key.push_str(&format!("[{index}]"));
            match items.get_mut(index) {
                Some(toml::Value::Table(inner)) if !rest.is_empty() => {
                    set_path(inner, rest, value, key)
                }
                Some(_) => Err(format!("cannot set entry {index} of this array")),
                None => Err(format!("entry {index} does not exist in the file")),
            }
        }
        _ => Err(format!("`{first}` is not a section")),
    }
}

#[cfg(test)]
mod tests;
