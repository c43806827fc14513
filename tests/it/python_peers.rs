//! Independent peers written in Python, from the venv `scripts/test.sh` makes:
//! `moto` in server mode as a second implementation of the STS Query API,
//! the seeds' `fetch_ephemeral_creds.py`, which must keep working unchanged,
//! and botocore running `fetch --credential-process` as AWS SDKs do.

use std::path::PathBuf;
use std::process::Stdio;

use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::fetch::{FakeRuntime, RUNTIME_BEARER};
use crate::support::broker::{BIN, Broker, BrokerSpec, DEADLINE, field};
use crate::support::jwks::JwksServer;
use crate::support::tokens::{AUDIENCE, CHECK_RUN_ID, KEY_A, REPOSITORY, SHA};
use crate::support::{DEFAULT_POLICY, Harness, assert_issued};

/// The venv with moto, requests and python-dotenv (made by `scripts/test.sh`).
fn venv() -> PathBuf {
    let venv = std::env::var_os("BROKER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    assert!(
        venv.join("bin/python").exists(),
        "{} has no Python: run ./scripts/test.sh, which creates it",
        venv.display()
    );
    venv
}

/// Whether the venv is there (or the test must skip).
fn have_venv() -> bool {
    let venv = std::env::var_os("BROKER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    crate::support::tool_available(
        "Python venv with moto (BROKER_TEST_VENV)",
        venv.join("bin/python").exists(),
        "scripts/test.sh creates it",
    )
}

/// `moto_server` on a free loopback port, killed on drop.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stdout of a process that must have succeeded (`what` names it when
/// it did not).
pub(crate) fn stdout_of_success(what: &str, output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs a `curl` command line as printed for a user (`dev` prints them), in
/// `sh`, with no proxy from the environment; its stdout, which must succeed.
pub(crate) async fn run_printed_curl(line: String) -> String {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(line.trim())
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stdout_of_success("curl", &output)
}

/// A broker, a fake Actions runtime minting its tokens and a scratch
/// directory; `None` (the test skips) without the Python venv.
async fn with_runtime() -> Option<(Harness, FakeRuntime, tempfile::TempDir)> {
    if !have_venv() {
        return None;
    }
    let h = Harness::start().await;
    let runtime = FakeRuntime::start(&h.jwks.issuer()).await;
    Some((h, runtime, tempfile::tempdir().unwrap()))
}

#[tokio::test]
async fn moto_is_an_independent_sts_that_the_broker_speaks_to() {
    if !have_venv() {
        return;
    }
    let moto = Moto::start().await;
    let jwks = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    let spec = BrokerSpec::new(&jwks.issuer(), &moto.url, DEFAULT_POLICY);
    let broker = Broker::start(&spec).await;
    let token = crate::support::tokens::token(&jwks.issuer()).build();
    let resp = broker
        .issue(&json!({"oidc_token": token, "repo": REPOSITORY, "job_id": CHECK_RUN_ID}))
        .await;
    let body = assert_issued(&resp);
    let key = body.access_key_id.as_str();
    assert!(
        key.starts_with("ASIA"),
        "moto issues temporary keys: {}",
        resp.text()
    );
    assert!(!body.session_token.expose_secret().is_empty());
    let expiration = time::OffsetDateTime::parse(
        &body.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = expiration - time::OffsetDateTime::now_utc();
    assert!(
        lifetime.whole_seconds() > 800 && lifetime.whole_seconds() <= 900,
        "15-minute credentials: {}",
        resp.text()
    );
    let event = broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(field(&event, "access_key_id").as_deref(), Some(key));
    assert_eq!(field(&event, "event").as_deref(), Some("credential_issued"));
}

#[tokio::test]
async fn the_seeds_python_fetcher_works_unchanged() {
    let Some((h, runtime, dir)) = with_runtime().await else {
        return;
    };
    let github_env = dir.path().join("github_env");
    std::fs::write(&github_env, "").unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fetch_ephemeral_creds.py");
    let output = tokio::process::Command::new(venv().join("bin/python"))
        .arg(&script)
        .args(["--job-id", CHECK_RUN_ID, "--repo", REPOSITORY])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CRED_BROKER_URL", format!("{}/issue", h.broker.base_url))
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &runtime.url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNTIME_BEARER)
        .env("GITHUB_ENV", &github_env)
        .output()
        .await
        .unwrap();
    let stdout = stdout_of_success("fetcher", &output);
    assert!(
        stdout.contains("Ephemeral credentials injected. Expires: "),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&github_env).unwrap();
    let issued = h.sts.issued();
    let last = issued.last().expect("the STS stub issued credentials");
    assert!(
        written.contains(&format!("AWS_ACCESS_KEY_ID={}\n", last.access_key_id)),
        "{written}"
    );
    assert!(
        written.contains(&format!(
            "AWS_SECRET_ACCESS_KEY={}\n",
            last.secret_access_key
        )),
        "{written}"
    );
    assert!(
        written.contains(&format!("AWS_SESSION_TOKEN={}\n", last.session_token)),
        "{written}"
    );
    assert_eq!(runtime.minted(), 1);
}

/// botocore, the library under the AWS CLI and boto3, with a
/// `credential_process` profile that runs the real `fetch` against the real
/// broker: ten reads of frozen credentials run the process every time (a
/// 15-minute credential is always inside botocore's 15-minute refresh
/// window), and the cache turns those runs into one issuance.
#[tokio::test]
async fn botocore_reading_credentials_ten_times_costs_one_issuance() {
    let Some((h, runtime, dir)) = with_runtime().await else {
        return;
    };
    let runner_temp = dir.path().join("runner_temp");
    std::fs::create_dir(&runner_temp).unwrap();
    let runs = dir.path().join("runs.log");
    let config = dir.path().join("aws_config");
    // A shell in front of the binary counts how often botocore runs it.
    std::fs::write(
        &config,
        format!(
            "[profile broker]\ncredential_process = sh -c 'echo run >> {runs}; exec \"$0\" \"$@\"' {bin} fetch --broker-url {url} --audience {AUDIENCE} --role deploy --job-id {CHECK_RUN_ID} --credential-process\n",
            runs = runs.display(),
            bin = BIN,
            url = h.broker.base_url,
        ),
    )
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/botocore_credential_process.py");
    let output = tokio::process::Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg("10")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_REPOSITORY", REPOSITORY)
        .env("GITHUB_SHA", SHA)
        .env("RUNNER_TEMP", &runner_temp)
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &runtime.url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNTIME_BEARER)
        .output()
        .await
        .unwrap();
    let stdout = stdout_of_success("botocore", &output);
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["method"], "custom-process");
    let issued = h.sts.issued();
    let process_runs = std::fs::read_to_string(&runs).unwrap().lines().count();
    eprintln!(
        "botocore: {process_runs} runs of the process, {} issuance(s)",
        issued.len()
    );
    assert!(
        process_runs >= 10,
        "botocore ran the process {process_runs} times"
    );
    assert!(
        issued.len() <= 2 && runtime.minted() <= 2,
        "{process_runs} runs of the process cost {} issuances and {} ID tokens",
        issued.len(),
        runtime.minted()
    );
    let keys = answer["access_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 10);
    assert!(
        keys.iter()
            .all(|key| key == issued[0].access_key_id.as_str()),
        "{answer}"
    );
}
