//! `attestation-broker dev`: the whole issuance path on one machine, in one
//! command, with nothing real behind it.
//!
//! A built-in development issuer (its own key, JWKS and a minting endpoint)
//! and a built-in fake STS (plainly fake credentials) are started on loopback,
//! and a broker configured for them serves on loopback. It refuses any
//! non-loopback address: its keys and credentials prove nothing.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use tokio::net::TcpListener;

use crate::config::{Config, LogFormat};
use crate::dev::{DevIssuer, FakeSts, dev_credentials, dev_owner_id, dev_repository_id};
use crate::policy::Policy;
use crate::{AppOptions, telemetry};

use super::EXIT_CONFIG;
use super::output::{report, write_stdout};

/// `dev` arguments.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Main listener (loopback only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Admin listener (loopback only).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// The repository (`owner/name`) the demo policy lets through.
    #[arg(long, default_value = "octo-org/demo")]
    pub repository: String,
    /// The audience the development issuer puts in its tokens and the broker expects.
    #[arg(long, default_value = "attestation-broker-dev")]
    pub audience: String,
}

/// The demo policy: one role, bound by ids to the chosen repository, from its
/// branches only, never from a self-hosted runner. The load benchmark uses it too.
pub fn demo_policy(repository: &str) -> String {
    let owner = repository.split('/').next().unwrap_or_default();
    format!(
        r#"# attestation-broker dev: demo policy (built in).
[[roles]]
name = "dev-deploy"
role_arn = "arn:aws:iam::000000000000:role/attestation-broker-dev"
duration_seconds = 900

[[roles.allow]]
repository_owner_id = "{owner_id}"
repository_id = "{repository_id}"
ref = "refs/heads/**"
event_name = ["push", "workflow_dispatch"]

[[roles.deny]]
runner_environment = "self-hosted"
"#,
        owner_id = dev_owner_id(owner),
        repository_id = dev_repository_id(repository),
    )
}

fn demo_config(issuer: &str, audience: &str, sts: &str, args: &DevArgs) -> String {
    format!(
        r#"[server]
listen = "{listen}"
admin_listen = "{admin}"

[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]

[sts]
endpoint_url = "{sts}"

[policy]
file = "(built in)"

[log]
format = "pretty"
level = "info"
"#,
        listen = args.listen,
        admin = args.admin_listen,
    )
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DevArgs) -> ExitCode {
    for (flag, addr) in [
        ("--listen", args.listen),
        ("--admin-listen", args.admin_listen),
    ] {
        if !addr.ip().is_loopback() {
            report!(
                "error: {flag} {addr}: `dev` binds loopback addresses only (127.0.0.1 or ::1); its keys and credentials are fake"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: DevArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Pretty, "info")?;
    let issuer = DevIssuer::start(
        TcpListener::bind("127.0.0.1:0").await?,
        args.audience.clone(),
    )
    .await?;
    let sts = FakeSts::start(TcpListener::bind("127.0.0.1:0").await?).await?;
    let config_text = demo_config(
        issuer.issuer_url(),
        &args.audience,
        sts.url().as_str(),
        &args,
    );
    let config = Config::parse(&config_text, "(dev built-in config)", &Default::default())?;
    let policy = Policy::compile(&demo_policy(&args.repository), "(dev built-in policy)")?;
    let options = AppOptions {
        aws_credentials: Some(dev_credentials()),
        policy: Some(policy),
    };
    let token_url = issuer.token_url();
    let repository = args.repository.clone();
    super::run(config, options, move |public, admin| {
        announce(public, admin, &token_url, &repository);
    })
    .await
}

fn announce(public: SocketAddr, admin: SocketAddr, token_url: &str, repository: &str) {
    let mint = format!("{token_url}?repository={repository}");
    // The banner only informs: when nobody reads stdout the demo keeps serving.
    let written = write_stdout(|out| {
        writeln!(out)?;
        writeln!(
            out,
            "attestation-broker dev is running (development issuer and fake STS; nothing here is real)."
        )?;
        writeln!(out, "  broker:  http://{public}/issue")?;
        writeln!(
            out,
            "  metrics: http://{admin}/metrics   ready: http://{admin}/readyz"
        )?;
        writeln!(out, "  mint a token for {repository}: curl -s '{mint}'")?;
        writeln!(out)?;
        writeln!(out, "Full issuance:")?;
        writeln!(
            out,
            "  curl -s -X POST http://{public}/issue -H \"Authorization: Bearer $(curl -s '{mint}' | sed -E 's/.*\"value\":\"([^\"]*)\".*/\\1/')\""
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "A repository the demo policy does not allow gets 403: replace repository={repository} with another owner/name."
        )?;
        writeln!(out)
    });
    if let Err(err) = written {
        report!("warning: cannot print the banner: {err}");
    }
}
