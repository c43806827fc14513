//! The GitHub App client: installation tokens for roles of kind `github`,
//! their scheduled revocation, and answers to commit context conditions.
//!
//! Trust: what is asked comes from a `GithubToken` (built by `decision`
//! only) or a `Commit` (built from verified claims only); GitHub's answers
//! are read within a deadline and a size cap, and only the fields used are
//! parsed. Secrets: the App's private key ([`AppKey`]), the App JWT and
//! every installation token are `SecretString` or redacted in `Debug`, and
//! are never logged; the audit log gets a token's SHA-256 only.
//!
//! Rate limit: every repository question needs GitHub's per-installation
//! budget, so installation lookups are cached (positive answers only), the
//! read-only token for context questions is reused until shortly before it
//! expires, list calls are conditional (`If-None-Match`: a 304 costs
//! nothing), and passed context answers are cached (see `context`).

mod call;
mod context;
mod key;
mod revoke;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

pub use call::{GithubError, Operation, Transport};
pub use key::AppKey;
pub use revoke::{RevokeOutcome, revoke_token};

use crate::api::{Access, Permissions};
use crate::config::{AppId, GithubConfig};
use crate::metrics::Metrics;
use call::endpoint;
use revoke::Revoker;

/// Lifetime of an App JWT: GitHub accepts at most 10 minutes.
const APP_JWT_LIFETIME_SECONDS: u64 = 540;
/// An App JWT is replaced this long before it expires.
const APP_JWT_MARGIN_SECONDS: u64 = 60;
/// Repositories whose installation is remembered.
const INSTALLATION_CACHE_ENTRIES: u64 = 10_000;
/// How long an installation lookup is trusted.
const INSTALLATION_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Most repository names an installation token may be asked for.
const MAX_TOKEN_REPOSITORIES: usize = 500;

/// What `GET /app` says about the App.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppInfo {
    /// The App's slug (`check_runs` name it as `app.slug`).
    pub slug: String,
    /// The permissions the App was granted.
    pub permissions: Permissions,
}

/// An installation token the broker issued to a caller.
#[derive(Debug)]
pub struct IssuedToken {
    /// `ghs_…`.
    pub token: SecretString,
    /// GitHub's expiry.
    pub expires_at: SystemTime,
    /// When the broker revokes it.
    pub revoke_at: SystemTime,
    /// The installation that minted it.
    pub installation_id: u64,
    /// `owner/name` of each repository it reaches.
    pub repositories: Vec<String>,
    /// Its permissions, as GitHub granted them.
    pub permissions: Permissions,
}

/// The App client; cheap to clone.
#[derive(Clone, Debug)]
pub struct GithubClient(Arc<Inner>);

struct Inner {
    api: Url,
    app_id: AppId,
    key: AppKey,
    transport: Transport,
    metrics: Metrics,
    revoke_after: Duration,
    jwt: Mutex<Option<(SecretString, u64)>>,
    installations: moka::future::Cache<(String, String), u64>,
    context: context::ContextCache,
    revoker: Revoker,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("api", &self.api.as_str())
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// `GET /app`'s fields the broker reads.
#[derive(Deserialize)]
struct AppBody {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    permissions: std::collections::BTreeMap<String, String>,
}

/// `GET /repos/{owner}/{repo}/installation`'s fields the broker reads.
#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
}

/// `POST …/access_tokens`' fields the broker reads.
#[derive(Deserialize)]
struct AccessTokenBody {
    token: String,
    expires_at: String,
    #[serde(default)]
    permissions: Option<std::collections::BTreeMap<String, String>>,
}

impl GithubClient {
    /// Builds the client from `[github]` (reading the key file).
    pub fn new(config: &GithubConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let key = AppKey::load(&config.private_key_file).map_err(anyhow::Error::msg)?;
        Self::with_key(config, key, metrics)
    }

    /// Builds the client with an already read key.
    pub fn with_key(config: &GithubConfig, key: AppKey, metrics: Metrics) -> anyhow::Result<Self> {
        let transport = Transport::new(config.request_timeout(), Some(metrics.clone()))?;
        Ok(Self(Arc::new(Inner {
            api: config.api_url(),
            app_id: config.app_id.clone(),
            key,
            transport,
            metrics: metrics.clone(),
            revoke_after: config.revoke_after(),
            jwt: Mutex::new(None),
            installations: moka::future::Cache::builder()
                .max_capacity(INSTALLATION_CACHE_ENTRIES)
                .time_to_live(INSTALLATION_CACHE_TTL)
                .build(),
            context: context::ContextCache::new(config.context_cache()),
            revoker: Revoker::new(metrics),
        })))
    }

    /// The App JWT, reused until a minute before it expires.
    fn app_jwt(&self) -> Result<SecretString, GithubError> {
        let now = unix_now();
        let mut slot = self
            .0
            .jwt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((jwt, exp)) = slot.as_ref()
            && now + APP_JWT_MARGIN_SECONDS < *exp
        {
            return Ok(jwt.clone());
        }
        let jwt = self
            .0
            .key
            .sign_jwt(self.0.app_id.as_str(), now, APP_JWT_LIFETIME_SECONDS)
            .map_err(|_| GithubError::Signing)?;
        let jwt = SecretString::from(jwt);
        let exp = now.saturating_sub(60) + APP_JWT_LIFETIME_SECONDS;
        *slot = Some((jwt.clone(), exp));
        Ok(jwt)
    }

    /// `GET /app`: the App's slug and granted permissions.
    pub async fn describe_app(&self) -> Result<AppInfo, GithubError> {
        let jwt = self.app_jwt()?;
        let url = endpoint(&self.0.api, &["app"]);
        let answer = self
            .0
            .transport
            .send(
                Operation::App,
                Method::GET,
                url,
                Some(&jwt),
                &[],
                None,
                &mut Vec::new(),
            )
            .await?;
        if answer.status != StatusCode::OK {
            return Err(answer.error(Operation::App));
        }
        let body: AppBody = answer.json(Operation::App)?;
        Ok(AppInfo {
            slug: body.slug.unwrap_or_default(),
            permissions: read_permissions(&body.permissions),
        })
    }

    /// The installation id for `owner/repo`; found ones are cached, a
    /// missing installation is asked again next time.
    async fn installation(
        &self,
        owner: &str,
        repo: &str,
        request_ids: &mut Vec<String>,
    ) -> Result<u64, GithubError> {
        let key = (owner.to_ascii_lowercase(), repo.to_ascii_lowercase());
        if let Some(id) = self.0.installations.get(&key).await {
            return Ok(id);
        }
        let jwt = self.app_jwt()?;
        let url = endpoint(&self.0.api, &["repos", owner, repo, "installation"]);
        let answer = self
            .0
            .transport
            .send(
                Operation::Installation,
                Method::GET,
                url,
                Some(&jwt),
                &[],
                None,
                request_ids,
            )
            .await?;
        match answer.status {
            StatusCode::OK => {
                let body: InstallationBody = answer.json(Operation::Installation)?;
                self.0.installations.insert(key, body.id).await;
                Ok(body.id)
            }
            StatusCode::NOT_FOUND => Err(GithubError::NotInstalled(format!("{owner}/{repo}"))),
            _ => Err(answer.error(Operation::Installation)),
        }
    }

    /// `POST /app/installations/{id}/access_tokens` for `repositories`
    /// (names under the installation's owner) with `permissions`.
    async fn mint(
        &self,
        installation_id: u64,
        repositories: &[String],
        permissions: &Permissions,
        request_ids: &mut Vec<String>,
    ) -> Result<(SecretString, SystemTime, Permissions), GithubError> {
        let jwt = self.app_jwt()?;
        let id = installation_id.to_string();
        let url = endpoint(&self.0.api, &["app", "installations", &id, "access_tokens"]);
        let permission_map: serde_json::Map<String, serde_json::Value> = permissions
            .iter()
            .map(|(name, access)| (name.clone(), access.as_str().into()))
            .collect();
        let body = serde_json::json!({
            "repositories": repositories,
            "permissions": permission_map,
        });
        let answer = self
            .0
            .transport
            .send(
                Operation::AccessToken,
                Method::POST,
                url,
                Some(&jwt),
                &[],
                Some(&body),
                request_ids,
            )
            .await?;
        match answer.status {
            StatusCode::CREATED => {}
            StatusCode::NOT_FOUND => {
                return Err(GithubError::NotInstalled(format!(
                    "installation {installation_id}"
                )));
            }
            status => {
                if let Some(err) = call::classify(Operation::AccessToken, status, &answer.headers) {
                    return Err(err);
                }
                if status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::FORBIDDEN {
                    return Err(GithubError::Refused {
                        operation: Operation::AccessToken.label(),
                        status: status.as_u16(),
                    });
                }
                return Err(answer.error(Operation::AccessToken));
            }
        }
        let body: AccessTokenBody = answer.json(Operation::AccessToken)?;
        let expires_at = parse_time(&body.expires_at).ok_or_else(|| GithubError::Invalid {
            operation: Operation::AccessToken.label(),
            reason: "expires_at is not an RFC 3339 time".into(),
        })?;
        if body.token.is_empty() || body.token.len() > 1024 {
            return Err(GithubError::Invalid {
                operation: Operation::AccessToken.label(),
                reason: "no usable token".into(),
            });
        }
        let granted = body
            .permissions
            .as_ref()
            .map_or_else(|| permissions.clone(), read_permissions);
        Ok((SecretString::from(body.token), expires_at, granted))
    }

    /// Issues the installation token a grant allows, and schedules its
    /// revocation. `request_ids` receives GitHub's request ids, also on failure.
    ///
    /// The parts come from a `decision::GithubToken`: `repositories` are
    /// names under `owner`, `permissions` exactly what the token carries.
    pub async fn issue(
        &self,
        owner: &str,
        repositories: &[String],
        permissions: &Permissions,
        request_ids: &mut Vec<String>,
    ) -> Result<IssuedToken, GithubError> {
        // Never issue what the broker could not promise to revoke.
        if !self.0.revoker.has_room() {
            return Err(GithubError::RevocationsFull);
        }
        let Some(first) = repositories.first() else {
            return Err(GithubError::Refused {
                operation: Operation::AccessToken.label(),
                status: 0,
            });
        };
        if repositories.len() > MAX_TOKEN_REPOSITORIES {
            return Err(GithubError::Refused {
                operation: Operation::AccessToken.label(),
                status: 0,
            });
        }
        let installation_id = self.installation(owner, first, request_ids).await?;
        let minted = self
            .mint(installation_id, repositories, permissions, request_ids)
            .await;
        let (token, expires_at, permissions) = match minted {
            Ok(minted) => minted,
            Err(err) => {
                if matches!(err, GithubError::NotInstalled(_)) {
                    // Uninstalled since the lookup was cached.
                    self.0
                        .installations
                        .invalidate(&(owner.to_ascii_lowercase(), first.to_ascii_lowercase()))
                        .await;
                }
                return Err(err);
            }
        };
        let revoke_at = (SystemTime::now() + self.0.revoke_after).min(expires_at);
        let delay = revoke_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.0
            .revoker
            .schedule(token.clone(), tokio::time::Instant::now() + delay);
        Ok(IssuedToken {
            token,
            expires_at,
            revoke_at,
            installation_id,
            repositories: repositories
                .iter()
                .map(|name| format!("{owner}/{name}"))
                .collect(),
            permissions,
        })
    }

    /// Runs the scheduled revocations until the process ends.
    pub fn spawn_revoker(&self) -> tokio::task::JoinHandle<()> {
        let revoker = self.0.revoker.clone();
        let transport = self.0.transport.clone();
        let api = self.0.api.clone();
        tokio::spawn(async move { revoker.run(transport, api).await })
    }

    /// Tokens waiting for their scheduled revocation.
    pub fn pending_revocations(&self) -> usize {
        self.0.revoker.pending()
    }

    /// Logs what `GET /app` says, or a warning when GitHub cannot say:
    /// readiness and AWS roles never wait for it.
    pub async fn log_app(&self) {
        match self.describe_app().await {
            Ok(info) => {
                let granted: Vec<String> = info
                    .permissions
                    .iter()
                    .map(|(name, access)| format!("{name}:{}", access.as_str()))
                    .collect();
                tracing::info!(
                    github.app = %info.slug,
                    github.permissions = %granted.join(","),
                    "GitHub App {} reachable; granted permissions: {}",
                    info.slug,
                    granted.join(",")
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot describe the GitHub App (GET /app); GitHub roles will fail until GitHub answers");
            }
        }
    }
}

/// GitHub's permission map, keeping the levels the broker knows.
fn read_permissions(raw: &std::collections::BTreeMap<String, String>) -> Permissions {
    raw.iter()
        .filter_map(|(name, level)| {
            let access = match level.as_str() {
                "read" => Access::Read,
                "write" => Access::Write,
                "admin" => Access::Admin,
                _ => return None,
            };
            Some((name.clone(), access))
        })
        .collect()
}

/// The permissions in `asked` that `granted` does not cover, as
/// `name: asked (granted: level|none)`.
pub fn missing_permissions(asked: &Permissions, granted: &Permissions) -> Vec<String> {
    asked
        .iter()
        .filter(|(name, level)| granted.get(*name).is_none_or(|have| have < *level))
        .map(|(name, level)| {
            let have = granted.get(name).map_or("none", |access| access.as_str());
            format!("{name}: {} (App granted: {have})", level.as_str())
        })
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// An RFC 3339 time.
fn parse_time(text: &str) -> Option<SystemTime> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let seconds = u64::try_from(at.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Checks `[github]` as `serve` would use it: the private key loads. Used
/// by start-up and `check-config`, with the `FILE: key KEY: REASON` line.
pub fn check_config(
    config: Option<&GithubConfig>,
    file: &str,
) -> Result<(), crate::config::ConfigError> {
    if let Some(github) = config {
        AppKey::load(&github.private_key_file).map_err(|reason| {
            crate::config::ConfigError::one(file, "github.private_key_file", reason)
        })?;
    }
    Ok(())
}

/// What in `policy` needs a GitHub App: roles of kind `github` and allow
/// rules with context conditions, one line each. Without `[github]` such a
/// policy is refused at start-up and by `check-config`.
pub fn needs_github(policy: &crate::policy::Policy) -> Vec<String> {
    let mut needs: Vec<String> = policy
        .roles()
        .iter()
        .filter(|role| role.credential.kind() == "github")
        .map(|role| format!("role `{}` is of kind `github`", role.name))
        .collect();
    let conditions = policy.context_conditions(&crate::policy::RoleRequest::default());
    if !conditions.is_empty() {
        let shown: Vec<String> = conditions.iter().map(ToString::to_string).collect();
        needs.push(format!(
            "allow rules ask GitHub about the commit ({})",
            shown.join(", ")
        ));
    }
    needs
}

/// The `github` roles of `policy` and the permissions each may ask for.
pub fn role_permissions(policy: &crate::policy::Policy) -> Vec<(String, Permissions)> {
    policy
        .roles()
        .into_iter()
        .filter_map(|role| match role.credential {
            crate::policy::RoleCredential::GitHub { permissions, .. } => {
                Some((role.name, permissions))
            }
            crate::policy::RoleCredential::Aws { .. } => None,
        })
        .collect()
}

/// What `check-config` found comparing the roles with the App's grant.
#[derive(Debug, PartialEq, Eq)]
pub enum GrantCheck {
    /// Every role asks at most what the App was granted.
    Covered {
        /// The App's slug.
        slug: String,
    },
    /// Roles asking for more than the App was granted, one line each.
    Beyond(Vec<String>),
    /// GitHub could not be asked.
    Unreachable(String),
}

/// Asks GitHub (`GET /app`) what the App was granted and compares each
/// role's permissions with it. Blocking: for `check-config`.
pub fn check_grants(config: &GithubConfig, roles: &[(String, Permissions)]) -> GrantCheck {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return GrantCheck::Unreachable(format!("cannot start a runtime: {err}")),
    };
    runtime.block_on(async {
        let metrics = match Metrics::new() {
            Ok(metrics) => metrics,
            Err(err) => return GrantCheck::Unreachable(err.to_string()),
        };
        let client = match GithubClient::new(config, metrics) {
            Ok(client) => client,
            Err(err) => return GrantCheck::Unreachable(format!("{err:#}")),
        };
        let info = match client.describe_app().await {
            Ok(info) => info,
            Err(err) => return GrantCheck::Unreachable(err.to_string()),
        };
        let beyond: Vec<String> = roles
            .iter()
            .flat_map(|(role, asked)| {
                missing_permissions(asked, &info.permissions)
                    .into_iter()
                    .map(move |missing| format!("role `{role}` asks {missing}"))
            })
            .collect();
        if beyond.is_empty() {
            GrantCheck::Covered { slug: info.slug }
        } else {
            GrantCheck::Beyond(beyond)
        }
    })
}

#[cfg(test)]
mod tests;
