//! `attestation-broker dev`: the whole issuance path on one machine, in one
//! command, with nothing real behind it.
//!
//! A built-in development issuer (its own key, JWKS and a minting endpoint),
//! a built-in fake STS (plainly fake credentials) and the test kit's
//! stand-in for GitHub (an App installed on the demo repository, plainly
//! fake `ghs_devfake_…` tokens) are started on loopback, and a broker
//! configured for them serves on loopback. It refuses any
//! non-loopback address: its keys and credentials prove nothing.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use tokio::net::TcpListener;

use crate::config::{Config, LogFormat};
use crate::dev::{DevIssuer, FakeSts, dev_credentials, dev_owner_id, dev_repository_id};
use crate::github::AppKey;
use crate::policy::Policy;
use crate::testkit::github::GithubStandIn;
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

/// The demo's GitHub role, appended to [`demo_policy`] by `dev` only:
/// installation tokens for the demo repository from `release/**` branches.
fn demo_github_role(repository: &str) -> String {
    let owner = repository.split('/').next().unwrap_or_default();
    format!(
        r#"
[[roles]]
name = "{DEMO_GITHUB_ROLE}"
kind = "github"
permissions = {{ contents = "write", pull_requests = "read" }}

[[roles.allow]]
repository_owner_id = "{owner_id}"
repository_id = "{repository_id}"
ref = "refs/heads/release/**"
"#,
        owner_id = dev_owner_id(owner),
        repository_id = dev_repository_id(repository),
    )
}

/// The demo's role of kind `github`.
const DEMO_GITHUB_ROLE: &str = "dev-release-notes";

fn demo_config(issuer: &str, audience: &str, sts: &str, github: &str, args: &DevArgs) -> String {
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

[github]
api_url = "{github}"
app_id = "{app_id}"
private_key_file = "(built in)"

[log]
format = "pretty"
level = "info"
"#,
        listen = args.listen,
        admin = args.admin_listen,
        github = github,
        app_id = crate::testkit::github::APP_ID,
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
    let github = GithubStandIn::start_on(TcpListener::bind("127.0.0.1:0").await?).await?;
    let (owner, name) = args
        .repository
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--repository must be owner/name"))?;
    github.install(owner, &[name]);
    let config_text = demo_config(
        issuer.issuer_url(),
        &args.audience,
        sts.url().as_str(),
        github.url().as_str(),
        &args,
    );
    let config = Config::parse(&config_text, "(dev built-in config)", &Default::default())?;
    let policy_text = demo_policy(&args.repository) + &demo_github_role(&args.repository);
    let policy = Policy::compile(&policy_text, "(dev built-in policy)")?;
    let github_key = AppKey::from_pem(github.app_key_pem()).map_err(anyhow::Error::msg)?;
    let options = AppOptions {
        aws_credentials: Some(dev_credentials()),
        policy: Some(policy),
        github_key: Some(github_key),
    };
    let job = TryIt {
        actions_token_url: issuer.actions_token_url(),
        request_token: issuer.issuer().request_token().to_owned(),
        repository: args.repository.clone(),
        audience: args.audience.clone(),
        sha: random_hex(20),
        check_run_id: rand::random_range(10_000_000_000u64..100_000_000_000).to_string(),
    };
    let token_url = issuer.token_url();
    let repository = args.repository.clone();
    super::run(config, options, move |public, admin| {
        announce(public, admin, &token_url, &repository);
        announce_fetch(public, &job);
    })
    .await
}

/// The made-up job that the printed `fetch` environment describes.
struct TryIt {
    actions_token_url: String,
    request_token: String,
    repository: String,
    audience: String,
    sha: String,
    check_run_id: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(buffer.as_mut_slice());
    hex::encode(buffer)
}

/// `text` as one POSIX shell word.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@=,".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Prints the environment of a made-up Actions job whose ID token comes from
/// the development issuer, and the `fetch` commands that use it, so a CI
/// author can run the real client locally.
fn announce_fetch(public: SocketAddr, job: &TryIt) {
    let mut id_token_url = url::Url::parse(&job.actions_token_url).ok();
    if let Some(url) = id_token_url.as_mut() {
        url.query_pairs_mut()
            .append_pair("api-version", "2.0")
            .append_pair("repository", &job.repository)
            .append_pair("sha", &job.sha)
            .append_pair("check_run_id", &job.check_run_id);
    }
    let id_token_url = id_token_url.map(String::from).unwrap_or_default();
    let broker = format!("http://{public}");
    let fetch = format!(
        "attestation-broker fetch --audience {} --job-id {}",
        shell_quote(&job.audience),
        job.check_run_id
    );
    let written = write_stdout(|out| {
        writeln!(
            out,
            "Try the real CI client (paste into a shell; this job's ID tokens come from the development issuer):"
        )?;
        for (name, value) in [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", job.repository.as_str()),
            ("GITHUB_SHA", job.sha.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", id_token_url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", job.request_token.as_str()),
            ("BROKER_URL", broker.as_str()),
        ] {
            writeln!(out, "  export {name}={}", shell_quote(value))?;
        }
        // Two commands: `export A=… B="$A…"` expands `$A` before assigning it.
        writeln!(out, "  export RUNNER_TEMP=\"$(mktemp -d)\"")?;
        writeln!(out, "  export GITHUB_ENV=\"$RUNNER_TEMP/github_env\"")?;
        writeln!(out, "  {fetch} --github-env")?;
        writeln!(out)?;
        writeln!(
            out,
            "An AWS CLI profile for the same shell (the AWS CLI passes these variables on to the process):"
        )?;
        writeln!(out, "  [profile broker-dev]")?;
        writeln!(
            out,
            "  credential_process = {fetch} --broker-url {broker} --credential-process"
        )?;
        writeln!(
            out,
            "  (then: aws configure export-credentials --profile broker-dev)"
        )?;
        writeln!(out)
    });
    if let Err(err) = written {
        report!("warning: cannot print the job environment: {err}");
    }
}

fn announce(public: SocketAddr, admin: SocketAddr, token_url: &str, repository: &str) {
    let mint = format!("{token_url}?repository={repository}");
    // The banner only informs: when nobody reads stdout the demo keeps serving.
    let written = write_stdout(|out| {
        writeln!(out)?;
        writeln!(
            out,
            "attestation-broker dev is running (development issuer, fake STS and stand-in GitHub; nothing here is real)."
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
        writeln!(out)?;
        writeln!(
            out,
            "GitHub installation token (role `{DEMO_GITHUB_ROLE}`, from a stand-in GitHub: `ghs_devfake_…`, revoked by the broker after 15 minutes):"
        )?;
        writeln!(
            out,
            "  curl -s -X POST http://{public}/issue -H 'Content-Type: application/json' -d '{{\"role\":\"{DEMO_GITHUB_ROLE}\"}}' -H \"Authorization: Bearer $(curl -s '{mint}&ref=refs/heads/release/1' | sed -E 's/.*\"value\":\"([^\"]*)\".*/\\1/')\""
        )?;
        writeln!(out)
    });
    if let Err(err) = written {
        report!("warning: cannot print the banner: {err}");
    }
}
