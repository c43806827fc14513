//! Policy hot reload: on SIGHUP, or when the policy file's content changes
//! (polled, so Kubernetes' ConfigMap symlink swap is seen), the new policy is
//! compiled and linted; if it loads, it replaces the old one atomically for
//! new requests; if not, the old one stays, the error is logged and counted in
//! `ci_policy_reloads_total{result="error"}`, and readiness is unaffected.
//!
//! Change detection compares the SHA-256 of the file's bytes with the loaded
//! policy's version (which is that hash), so touching a file without changing
//! it reloads nothing, and a broken file is reported once, not at every poll.

use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::config::PolicyConfig;
use crate::policy_set::{PolicySet, combined_version};
use crate::state::AppState;

/// Largest policy file read on reload; a bigger one is an error, not an allocation.
const MAX_POLICY_BYTES: u64 = 4 * 1024 * 1024;

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadOutcome {
    /// The file's content equals the loaded policy (or the last failed attempt).
    Unchanged,
    /// A new policy is in force.
    Replaced {
        /// Its version.
        version: String,
    },
    /// The file could not be read or compiled; the old policy stays.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Watches the `[policy]` files (rules and Rego) for one broker.
#[derive(Debug)]
pub(crate) struct PolicyWatcher {
    state: AppState,
    config: PolicyConfig,
    last_failed: Option<String>,
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let metadata =
        std::fs::metadata(path).map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    if metadata.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "{}: larger than {MAX_POLICY_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|err| format!("{}: cannot read: {err}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl PolicyWatcher {
    /// A watcher of the files `config` names, for `state`.
    pub(crate) fn new(state: AppState, config: PolicyConfig) -> Self {
        Self {
            state,
            config,
            last_failed: None,
        }
    }

    /// The version the files on disk would have once compiled.
    fn version_on_disk(&self) -> Result<String, String> {
        let rules = sha256_hex(&read_capped(&self.config.file)?);
        let rego = match &self.config.rego {
            Some(path) => {
                let mut text = format!("{}\n", self.config.rego_query).into_bytes();
                text.extend(read_capped(path)?);
                Some(sha256_hex(&text))
            }
            None => None,
        };
        Ok(combined_version(&rules, rego.as_deref()))
    }

    /// Checks the files once; `force` retries even content that failed before (SIGHUP).
    pub(crate) fn reload(&mut self, force: bool) -> ReloadOutcome {
        let version = match self.version_on_disk() {
            Ok(version) => version,
            Err(reason) => return self.fail(reason, None),
        };
        if version == self.state.policy().version()
            || (!force && self.last_failed.as_deref() == Some(version.as_str()))
        {
            return ReloadOutcome::Unchanged;
        }
        match PolicySet::load(&self.config) {
            Ok((policy, _))
                if self.state.github.is_none()
                    && !crate::github::needs_github(&policy.rules).is_empty() =>
            {
                let needs = crate::github::needs_github(&policy.rules).join("; ");
                self.fail(
                    format!(
                        "the policy needs a GitHub App, but [github] is not configured: {needs}"
                    ),
                    Some(version),
                )
            }
            Ok((policy, warnings)) => {
                for warning in &warnings {
                    tracing::warn!(policy.role = %warning.role, policy.rule = warning.rule.as_deref().unwrap_or("-"),
                        policy.key = warning.key.as_deref().unwrap_or("-"), "policy warning: {}", warning.message);
                }
                let version = policy.version().to_owned();
                self.state.replace_policy(policy);
                self.state.metrics.policy_reload("ok");
                self.last_failed = None;
                tracing::info!(policy.version = %version, policy.file = %self.config.file.display(), "policy reloaded");
                ReloadOutcome::Replaced { version }
            }
            Err(err) => self.fail(err.to_string(), Some(version)),
        }
    }

    fn fail(&mut self, reason: String, hash: Option<String>) -> ReloadOutcome {
        self.state.metrics.policy_reload("error");
        self.last_failed = hash;
        tracing::error!(policy.file = %self.config.file.display(), error = %reason,
            "policy reload failed; the previous policy stays in force");
        ReloadOutcome::Failed { reason }
    }

    /// Reloads on SIGHUP and every `interval` (when not zero), in a task. The
    /// SIGHUP handler is installed before this returns, so a SIGHUP sent once
    /// the broker announced itself is never the default (fatal) one.
    pub(crate) fn spawn(mut self, interval: Duration) {
        let mut trigger = ReloadTrigger::new(interval);
        tokio::spawn(async move {
            loop {
                let force = trigger.next().await;
                if force {
                    tracing::info!(policy.file = %self.config.file.display(), "SIGHUP: reloading the policy");
                }
                self.reload(force);
            }
        });
    }
}

/// What wakes a file watcher: SIGHUP (a forced reload) or its polling interval.
/// Shared by the policy and the TLS certificate watchers; each installs its
/// own SIGHUP handler, and tokio delivers the signal to every one.
#[derive(Debug)]
pub(crate) struct ReloadTrigger {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    tick: Option<tokio::time::Interval>,
}

impl ReloadTrigger {
    /// Installs the SIGHUP handler now (so a SIGHUP is never the default,
    /// fatal one once this returns); polls every `interval`, first one
    /// `interval` from now; 0 turns polling off.
    pub(crate) fn new(interval: Duration) -> Self {
        let tick = (!interval.is_zero()).then(|| {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        Self {
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            tick,
        }
    }

    /// Waits for the next trigger; `true` when it was SIGHUP.
    pub(crate) async fn next(&mut self) -> bool {
        let polled = async {
            match self.tick.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(unix)]
        let signalled = async {
            match self.hangup.as_mut() {
                Some(hangup) => {
                    hangup.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = polled => false,
            () = signalled => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::{AppOptions, build_app};

    const POLICY_A: &str = include_str!("../tests/fixtures/policies/reload.toml");

    async fn app_with_policy(dir: &Path) -> (crate::App, std::path::PathBuf) {
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, POLICY_A).unwrap();
        let text = format!(
            "[[issuers]]\nissuer = \"http://127.0.0.1:9\"\naudiences = [\"a\"]\n[sts]\nendpoint_url = \"http://127.0.0.1:9\"\n[policy]\nfile = \"{}\"\n",
            policy.display()
        );
        let config = Config::parse(&text, "test.toml", &Default::default()).unwrap();
        let credentials =
            aws_credential_types::Credentials::new("AKID", "secret", None, None, "test");
        let app = build_app(
            config,
            AppOptions {
                aws_credentials: Some(credentials),
                ..AppOptions::default()
            },
        )
        .await
        .unwrap();
        (app, policy)
    }

    #[tokio::test]
    async fn a_good_change_replaces_and_a_bad_one_keeps_the_old_policy() {
        let dir = tempfile::tempdir().unwrap();
        let (app, path) = app_with_policy(dir.path()).await;
        let mut watcher = PolicyWatcher::new(app.state.clone(), app.state.config.policy.clone());
        let original = app.state.policy().version().to_owned();
        assert_eq!(watcher.reload(false), ReloadOutcome::Unchanged);

        std::fs::write(
            &path,
            POLICY_A.replace("refs/heads/main", "refs/heads/release"),
        )
        .unwrap();
        let ReloadOutcome::Replaced { version } = watcher.reload(false) else {
            panic!("expected a reload")
        };
        assert_ne!(version, original);
        assert_eq!(app.state.policy().version(), version);

        std::fs::write(&path, "[[roles]]\nname = \"broken\"\n").unwrap();
        assert!(matches!(
            watcher.reload(false),
            ReloadOutcome::Failed { .. }
        ));
        assert_eq!(
            app.state.policy().version(),
            version,
            "the old policy stays in force"
        );
        assert_eq!(
            watcher.reload(false),
            ReloadOutcome::Unchanged,
            "a failed content is reported once"
        );
        assert!(
            matches!(watcher.reload(true), ReloadOutcome::Failed { .. }),
            "SIGHUP retries"
        );

        let metrics = app.state.metrics.render();
        assert!(
            metrics.contains("ci_policy_reloads_total{result=\"ok\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("ci_policy_reloads_total{result=\"error\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("ci_policy_info{{version=\"{version}\"}} 1")),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_policy_needing_github_is_refused_without_an_app() {
        let dir = tempfile::tempdir().unwrap();
        let (app, path) = app_with_policy(dir.path()).await;
        let mut watcher = PolicyWatcher::new(app.state.clone(), app.state.config.policy.clone());
        let original = app.state.policy().version().to_owned();
        std::fs::write(
            &path,
            format!(
                "{POLICY_A}\n[[roles]]\nname = \"notes\"\nkind = \"github\"\npermissions = {{ contents = \"read\" }}\n[[roles.allow]]\nref = \"refs/heads/main\"\n"
            ),
        )
        .unwrap();
        let ReloadOutcome::Failed { reason } = watcher.reload(false) else {
            panic!("a policy needing GitHub was loaded without [github]")
        };
        assert!(
            reason.contains("[github] is not configured: role `notes` is of kind `github`"),
            "{reason}"
        );
        assert_eq!(app.state.policy().version(), original);
    }

    #[tokio::test]
    async fn a_configmap_style_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = app_with_policy(dir.path()).await;
        // Kubernetes mounts: policy.toml -> ..data/policy.toml, ..data -> ..2026_v1
        let v1 = dir.path().join("..v1");
        let v2 = dir.path().join("..v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("policy.toml"), POLICY_A).unwrap();
        std::fs::write(v2.join("policy.toml"), POLICY_A.replace("\"1\"", "\"2\"")).unwrap();
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink(&v1, &data).unwrap();
        let mounted = dir.path().join("mounted.toml");
        std::os::unix::fs::symlink(data.join("policy.toml"), &mounted).unwrap();
        let mut config = app.state.config.policy.clone();
        config.file = mounted;
        let mut watcher = PolicyWatcher::new(app.state.clone(), config);
        assert_eq!(watcher.reload(false), ReloadOutcome::Unchanged);
        let staged = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&v2, &staged).unwrap();
        std::fs::rename(&staged, &data).unwrap();
        assert!(matches!(
            watcher.reload(false),
            ReloadOutcome::Replaced { .. }
        ));
    }
}
