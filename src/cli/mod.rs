//! The command line. `main.rs` only parses arguments and dispatches here;
//! each subcommand with more than a few lines lives in its own file under
//! `src/cli/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod dev;
pub mod output;
pub mod policy;
pub mod revoke;
pub mod token;

use crate::config::{Config, ConfigError};
use crate::policy::RoleCredential;
use crate::policy_set::PolicySet;
use crate::{AppOptions, build_app, telemetry};
use output::{emit, report};

/// Exit code for a bad configuration or policy (EX_CONFIG-style usage error, sysexits 64).
pub const EXIT_CONFIG: u8 = 64;

/// attestation-broker: GitHub Actions OIDC tokens in, short-lived AWS credentials out.
#[derive(Debug, Parser)]
#[command(name = "attestation-broker", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate configuration and policy, print the roles, and exit.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// CI side: exchange this job's ID token for AWS credentials (see `fetch`).
    Fetch(crate::fetch::FetchArgs),
    /// Local demo on loopback: development issuer, fake STS, and a broker.
    Dev(dev::DevArgs),
    /// Work with tokens offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// CI side: revoke the GitHub installation token in GH_TOKEN (the job's last step).
    RevokeGithubToken(revoke::RevokeArgs),
    /// Govern policy files: lint (`check`), trace a decision (`explain`), compare (`diff`).
    Policy {
        /// What to do with the policy.
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode a token and run every verification check, each with pass or fail.
    Inspect(token::InspectArgs),
}

/// The process environment as a map; the only place it is read.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Loads the configuration, then checks what the files it names hold: that
/// the TLS certificate and key build a TLS configuration and that the Redis
/// CA file is usable. `serve` and `check-config` both start here, so both
/// refuse the same things, with `FILE: key KEY: REASON`.
pub fn load_checked_config(
    path: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let config = Config::load(path, env)?;
    let file = path.display().to_string();
    crate::tls::check_config(&config.server, &file)?;
    crate::replay::check_config(&config.replay, &file)?;
    crate::github::check_config(config.github.as_ref(), &file)?;
    Ok(config)
}

/// Loads the configuration or prints every problem and returns the exit code.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    load_checked_config(path, &process_env()).map_err(|err| {
        report!("configuration error:\n{err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `check-config`: validate everything `serve` would. The only network call
/// is `GET /app` when `[github]` is set and the policy has `github` roles,
/// to compare their permissions with the App's grant (unreachable: a warning).
pub fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (policy, warnings) = match PolicySet::load(&config.policy) {
        Ok(loaded) => loaded,
        Err(err) => {
            report!("policy error:\n{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let file = path.display();
    let github_roles = crate::github::role_permissions(&policy.rules);
    let grant = match &config.github {
        None => {
            let needs = crate::github::needs_github(&policy.rules);
            if !needs.is_empty() {
                report!(
                    "configuration error:\n{file}: key `github`: required by the policy: {}",
                    needs.join("; ")
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            None
        }
        Some(_) if github_roles.is_empty() => None,
        Some(github) => Some(crate::github::check_grants(github, &github_roles)),
    };
    if let Some(crate::github::GrantCheck::Beyond(lines)) = &grant {
        report!(
            "configuration error:\n{}",
            lines
                .iter()
                .map(|line| format!("{file}: key `github.app_id`: {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    emit(ExitCode::SUCCESS, |out| {
        writeln!(out, "configuration: {} (ok)", path.display())?;
        if let Some(github) = &config.github {
            writeln!(
                out,
                "github: {} app_id={} revoke_after={}s context_cache={}s",
                github.api_url(),
                github.app_id.as_str(),
                github.revoke_after_seconds,
                github.context_cache_seconds
            )?;
            match &grant {
                Some(crate::github::GrantCheck::Covered { slug }) => writeln!(
                    out,
                    "github: App `{slug}` grants every permission the github roles ask for"
                )?,
                Some(crate::github::GrantCheck::Unreachable(reason)) => writeln!(
                    out,
                    "warning: github: cannot compare the github roles' permissions with the App's grant: GitHub could not be asked (GET /app): {reason}"
                )?,
                _ => {}
            }
        }
        writeln!(
            out,
            "policy: {} (version {})",
            config.policy.file.display(),
            policy.version()
        )?;
        if let Some(rego) = &config.policy.rego {
            writeln!(
                out,
                "rego: {} (query {})",
                rego.display(),
                config.policy.rego_query
            )?;
        }
        for issuer in &config.issuers {
            writeln!(
                out,
                "issuer: {} audiences={}",
                issuer.issuer,
                issuer.audiences.join(",")
            )?;
        }
        writeln!(out, "roles:")?;
        for role in policy.rules.roles() {
            match &role.credential {
                RoleCredential::Aws {
                    role_arn,
                    duration_seconds,
                    ..
                } => writeln!(
                    out,
                    "  {}  {}  duration={}s  allow_rules={}  deny_rules={}",
                    role.name, role_arn, duration_seconds, role.allow_rules, role.deny_rules
                )?,
                RoleCredential::GitHub {
                    repositories,
                    permissions,
                } => writeln!(
                    out,
                    "  {}  kind=github  repositories={}  permissions={}  allow_rules={}  deny_rules={}",
                    role.name,
                    repositories.join(","),
                    permissions
                        .iter()
                        .map(|(name, level)| format!("{name}:{}", level.as_str()))
                        .collect::<Vec<_>>()
                        .join(","),
                    role.allow_rules,
                    role.deny_rules
                )?,
            }
        }
        for warning in &warnings {
            let place = [
                Some(warning.role.as_str()),
                warning.rule.as_deref(),
                warning.key.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(".");
            writeln!(out, "warning: {place}: {}", warning.message)?;
        }
        Ok(())
    })
}

/// `serve`: run until SIGTERM or Ctrl-C, then drain.
pub async fn serve(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(err) = telemetry::init(config.log.format, &config.log.level) {
        report!("{err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run(config, AppOptions::default(), |_, _| {}).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "broker failed to start");
            report!("error: {err:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Builds, binds, announces and serves one broker until a shutdown signal.
/// `on_listening` learns the bound addresses once the keys are loaded.
pub async fn run(
    config: Config,
    options: AppOptions,
    on_listening: impl FnOnce(std::net::SocketAddr, std::net::SocketAddr),
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let app = build_app(config, options).await?;
    let public = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen}"))?;
    app.start_background().await;
    let shutdown = shutdown_signal();
    let (public_addr, admin_addr) = (public.local_addr()?, admin.local_addr()?);
    tracing::info!(
        listen = %public_addr,
        admin_listen = %admin_addr,
        tls = app.serves_tls(),
        policy_version = %app.state.policy().version(),
        version = env!("CARGO_PKG_VERSION"),
        "broker listening"
    );
    on_listening(public_addr, admin_addr);
    app.serve(public, admin, shutdown).await
}

/// Resolves on SIGTERM or SIGINT. The SIGTERM handler is installed when this
/// is called, not when the future is first polled: `run` calls it before
/// announcing the broker, so a SIGTERM sent right after the announcement
/// drains instead of meeting the default action (exit by signal).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match terminate {
                Some(mut terminate) => {
                    tokio::select! {
                        _ = interrupt => {}
                        _ = terminate.recv() => {}
                    }
                }
                None => {
                    let _ = interrupt.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = interrupt.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = include_str!("../../tests/fixtures/configs/minimal.toml");

    #[test]
    fn tls_files_that_do_not_load_stop_the_start_with_file_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("policy.toml"), "").unwrap();
        std::fs::write(dir.path().join("tls.crt"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("tls.key"),
            "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n",
        )
        .unwrap();
        let config_path = dir.path().join("broker.toml");
        let text = MINIMAL.replace("config/policy.toml", "policy.toml")
            + "\n[server]\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n";
        std::fs::write(&config_path, text).unwrap();
        let message = load_checked_config(&config_path, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "{}: key `server.tls_key`: ",
                config_path.display()
            )),
            "{message}"
        );
        assert!(message.contains("tls.key"), "{message}");
        assert!(message.contains("no PRIVATE KEY"), "{message}");

        // Relative paths resolve next to the configuration file.
        std::fs::write(
            dir.path().join("tls.key"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        let config = load_checked_config(&config_path, &BTreeMap::new()).unwrap();
        assert_eq!(config.server.tls_cert, Some(dir.path().join("tls.crt")));
    }
}
