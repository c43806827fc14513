//! `check-config`, start-up refusals and the `dev` demo, through the real binary.
//! `check-config`'s whole output is compared with reviewed snapshots
//! (`snapshots/it__cli__*.snap`, see `cli_output`).

use attestation_broker::api::{CredentialProcess, IssueResponse};
use secrecy::ExposeSecret as _;

use insta::assert_snapshot;

use crate::cli_output::{redactions, render};
use crate::python_peers::run_printed_curl;
use crate::support::DEFAULT_POLICY;
use crate::support::broker::{BIN, BrokerSpec, Process, RunOutput, run_to_completion};

/// A config pointing at loopback addresses nobody needs to answer.
fn spec() -> BrokerSpec {
    BrokerSpec::new("http://127.0.0.1:9", "http://127.0.0.1:9", DEFAULT_POLICY)
}

fn snapshot(out: &RunOutput) -> String {
    render(out.code, &out.stdout, &out.stderr)
}

async fn run(spec: &BrokerSpec, command: &str, env: &[(&str, &str)]) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let config = spec.write_to(dir.path());
    let config = config.display().to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    run_to_completion(&[command, "--config", &config], &env).await
}

#[tokio::test]
async fn check_config_accepts_a_valid_config_and_lists_the_roles() {
    let _redact = redactions();
    let out = run(&spec(), "check-config", &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_snapshot!("check_config_valid", snapshot(&out));
}

/// A configuration `check-config` refuses with exit 64: the name of its
/// reviewed snapshot, the edit of the valid `spec()`, the environment.
type Refused = (
    &'static str,
    fn(&mut BrokerSpec),
    &'static [(&'static str, &'static str)],
);

#[tokio::test]
async fn check_config_refuses_bad_configurations_with_exit_64() {
    let _redact = redactions();
    let cases: [Refused; 8] = [
        (
            "check_config_unknown_key",
            |spec| {
                spec.set("server.listen_adress", "127.0.0.1:0");
            },
            &[],
        ),
        (
            "check_config_plain_http_issuer",
            |spec| {
                spec.set_issuer_key(0, "issuer", "http://token.example.com");
            },
            &[],
        ),
        // HMAC and `none` algorithms.
        (
            "check_config_algorithm_HS256",
            |spec| {
                spec.set("verify.algorithms", vec!["RS256", "HS256"]);
            },
            &[],
        ),
        (
            "check_config_algorithm_none",
            |spec| {
                spec.set("verify.algorithms", vec!["RS256", "none"]);
            },
            &[],
        ),
        // Environment overrides apply.
        (
            "check_config_environment_override",
            |_| {},
            &[("BROKER_SERVER__LISTEN", "not-an-address")],
        ),
        (
            "check_config_rule_without_conditions",
            |spec| {
                spec.policy = "[[roles]]\nname = \"deploy\"\nrole_arn = \"arn:aws:iam::123456789012:role/X\"\n\n[[roles.allow]]\n".to_owned();
            },
            &[],
        ),
        (
            "check_config_role_without_allow_rules",
            |spec| {
                spec.policy =
                    "[[roles]]\nname = \"deploy\"\nrole_arn = \"arn:aws:iam::123456789012:role/X\"\n"
                        .to_owned();
            },
            &[],
        ),
        (
            "check_config_unknown_policy_key",
            |spec| {
                spec.policy = format!("version = 2\n{DEFAULT_POLICY}");
            },
            &[],
        ),
    ];
    for (name, edit, env) in cases {
        let mut spec = spec();
        edit(&mut spec);
        let out = run(&spec, "check-config", env).await;
        assert_eq!(out.code, Some(64), "{name}:\n{}", out.all());
        assert_snapshot!(name, snapshot(&out));
    }
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_bad_config() {
    let mut spec = spec();
    spec.set("sts.max_attempts", 0);
    let out = run(&spec, "serve", &[]).await;
    assert!(
        out.code.is_some_and(|code| code != 0),
        "serve did not exit non-zero:\n{}",
        out.all()
    );
    assert!(out.all().contains("sts.max_attempts"), "{}", out.all());
    assert!(!out.all().contains("broker listening"), "{}", out.all());
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_policy() {
    let mut spec = spec();
    spec.set("policy.file", "/nonexistent/policy.toml");
    let out = run(&spec, "serve", &[]).await;
    assert!(
        out.code.is_some_and(|code| code != 0),
        "serve did not exit non-zero:\n{}",
        out.all()
    );
    assert!(
        out.all().contains("/nonexistent/policy.toml"),
        "{}",
        out.all()
    );
}

/// `dev` on loopback ports the system picks.
const DEV_ON_LOOPBACK: [&str; 5] = [
    "dev",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

#[tokio::test]
async fn dev_prints_a_curl_that_performs_a_full_issuance() {
    let mut dev = Process::spawn(&DEV_ON_LOOPBACK, &[]);
    let marker = dev
        .wait_for_line("the `Full issuance:` heading", |line| {
            line.trim() == "Full issuance:"
        })
        .await;
    let curl = dev
        .wait_for_line("the issuance curl", |line| {
            line.trim_start().starts_with("curl ") && line.contains("/issue")
        })
        .await;
    assert!(!marker.is_empty());
    let stdout = run_printed_curl(curl).await;
    // The wire type requires every credential field; none may be empty.
    let body: IssueResponse =
        serde_json::from_str(&stdout).unwrap_or_else(|err| unreachable!("{err}: {stdout}"));
    assert!(
        [
            body.access_key_id.as_str(),
            body.secret_access_key.expose_secret(),
            body.session_token.expose_secret(),
            body.expiration.as_str(),
        ]
        .iter()
        .all(|value| !value.is_empty()),
        "{stdout}"
    );
}

#[tokio::test]
async fn dev_refuses_non_loopback_addresses() {
    for args in [
        [
            "dev",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        [
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ],
    ] {
        let out = run_to_completion(&args, &[]).await;
        assert!(
            out.code.is_some_and(|code| code != 0),
            "dev accepted {args:?}:\n{}",
            out.all()
        );
        assert!(!out.all().contains("Full issuance"), "{}", out.all());
        assert!(
            out.all().contains("loopback"),
            "the refusal does not say why:\n{}",
            out.all()
        );
    }
}

/// Runs `check-config --config CONFIG` from `cwd`, with no inherited environment.
fn check_config_from(cwd: &std::path::Path, config: &std::path::Path) -> RunOutput {
    let output = std::process::Command::new(crate::support::broker::binary())
        .args(["check-config", "--config"])
        .arg(config)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    RunOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn the_shipped_configurations_load_from_any_working_directory() {
    let _redact = redactions();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let elsewhere = tempfile::tempdir().unwrap();
    for config in ["config/broker.toml", "deploy/base/config/broker.toml"] {
        let config = root.join(config);
        let out = check_config_from(elsewhere.path(), &config);
        assert_eq!(out.code, Some(0), "{}: {}", config.display(), out.all());
        let policy = config.with_file_name("policy.toml");
        assert!(
            out.stdout
                .contains(&format!("policy: {} (version", policy.display())),
            "{}",
            out.all()
        );
        // The roles of the example policy, each with its rules.
        let name = format!(
            "check_config_shipped_{}",
            config.parent().unwrap().display()
        )
        .replace(&format!("{}/", root.display()), "")
        .replace('/', "_");
        assert_snapshot!(name, snapshot(&out));
    }
}

#[test]
fn check_config_lists_every_type_error_in_one_run() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), DEFAULT_POLICY).unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = 8443

[[issuers]]
issuer = "https://token.actions.githubusercontent.com"
audiences = ["https://github.com/ourorg"]

[jwks]
refresh_secs = 60

[replay]
store = "mongodb"

[policy]
file = "policy.toml"
"#,
    )
    .unwrap();
    let out = check_config_from(dir.path(), &config);
    assert_eq!(out.code, Some(64), "{}", out.all());
    // One line per problem, each naming the file and the key:
    // `server.listen`, `jwks.refresh_secs`, `replay.store`.
    assert_snapshot!("check_config_type_errors", snapshot(&out));
}

#[test]
fn a_missing_configuration_file_is_named_with_the_os_reason() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nope.toml");
    let out = check_config_from(dir.path(), &config);
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(!out.stderr.contains("key `-`"), "{}", out.all());
    assert_snapshot!("check_config_missing_file", snapshot(&out));
}

/// The loop a CI author runs locally: `dev` prints a job's environment and
/// the `fetch` command; pasted into a shell with the real binary on `PATH`,
/// it gets (fake) credentials, in the Actions mode and as a credential_process.
#[tokio::test]
async fn dev_prints_an_environment_in_which_the_real_fetch_gets_credentials() {
    let mut dev = Process::spawn(&DEV_ON_LOOPBACK, &[]);
    let profile = dev
        .wait_for_line("the credential_process line", |line| {
            line.trim_start().starts_with("credential_process = ")
        })
        .await;
    let lines = dev.lines();
    let exports: Vec<&str> = lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| line.starts_with("export "))
        .collect();
    for name in [
        "GITHUB_REPOSITORY=",
        "GITHUB_SHA=",
        "ACTIONS_ID_TOKEN_REQUEST_URL=",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN=",
        "BROKER_URL=",
    ] {
        assert!(
            exports.iter().any(|line| line.contains(name)),
            "no {name} in {exports:?}"
        );
    }
    let fetch = lines
        .iter()
        .map(|line| line.trim())
        .find(|line| {
            line.starts_with("attestation-broker fetch ") && line.ends_with("--github-env")
        })
        .unwrap_or_else(|| unreachable!("no fetch command in:\n{}", lines.join("\n")));
    let process = profile.trim().trim_start_matches("credential_process = ");
    let script = format!(
        "{exports}\n[ -d \"$RUNNER_TEMP\" ] || exit 98\ncase \"$GITHUB_ENV\" in \"$RUNNER_TEMP\"/*) ;; *) exit 99 ;; esac\n{fetch} || exit $?\necho '--- GITHUB_ENV'\ncat \"$GITHUB_ENV\"\necho '--- credential_process'\n{process}\n",
        exports = exports.join("\n"),
    );
    let bin_dir = std::path::Path::new(BIN).parent().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the pasted commands failed ({:?}):\n{stdout}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, after) = stdout.split_once("--- GITHUB_ENV\n").unwrap();
    let (github_env, process_json) = after.split_once("--- credential_process\n").unwrap();
    let key = github_env
        .lines()
        .find_map(|line| line.strip_prefix("AWS_ACCESS_KEY_ID="))
        .unwrap_or_else(|| unreachable!("no key in GITHUB_ENV:\n{github_env}"));
    assert!(key.starts_with("ASIADEVFAKE"), "{key}");
    assert!(github_env.contains("AWS_SECRET_ACCESS_KEY=dev-fake-secret-"));
    let document: CredentialProcess = serde_json::from_str(process_json.trim()).unwrap();
    assert!(
        document.access_key_id.starts_with("ASIADEVFAKE"),
        "{process_json}"
    );
}
