//! No command panics when the reader of its output goes away
//! (`attestation-broker check-config … | head -1`): each is run once with its
//! output read, then with stdout a pipe whose reading end is already closed,
//! and must exit with the same code, without a panic.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::broker::{DEADLINE, binary};
use crate::support::tokens::KEY_A;

/// Rust's exit code after a panic.
const PANIC_EXIT: i32 = 101;

/// What one run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Where the command's stdout goes.
enum Out {
    /// A pipe read to the end.
    Read,
    /// A pipe nobody reads: its reading end is closed before the start.
    Closed,
}

/// Runs the binary to completion in `dir`; stderr is always read, or closed
/// like stdout when `close_stderr` is set.
fn run(dir: &Path, args: &[&str], out: Out, close_stderr: bool) -> Run {
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(match out {
            Out::Read => Stdio::piped(),
            Out::Closed => closed(),
        })
        .stderr(if close_stderr {
            closed()
        } else {
            Stdio::piped()
        });
    let mut child = command.spawn().unwrap();
    drop(command);
    // Read both streams to the end (the child exits or the deadline kills it).
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ] {
        readers.push(std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_string(&mut text);
            }
            text
        }));
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut texts = readers.into_iter().map(|reader| reader.join().unwrap());
    Run {
        code: status.and_then(|status| status.code()),
        stdout: texts.next().unwrap_or_default(),
        stderr: texts.next().unwrap_or_default(),
    }
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Input files for the commands, in a temporary directory.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token =
            crate::support::tokens::token("https://token.actions.githubusercontent.com").build();
        std::fs::write(dir.path().join("token.jwt"), &token).unwrap();
        let jwks = json!({ "keys": [KEY_A.jwk()] });
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        let claims = json!({
            "repository": "ourorg/app",
            "repository_owner_id": "1234567",
            "ref": "refs/heads/main",
            "event_name": "push",
        });
        std::fs::write(dir.path().join("claims.json"), claims.to_string()).unwrap();
        // The example configuration and policy, copied so that the commands
        // run from a directory that is not the repository.
        for name in ["broker.toml", "policy.toml"] {
            std::fs::copy(
                repository_root().join("config").join(name),
                dir.path().join(name),
            )
            .unwrap();
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn no_command_panics_when_its_stdout_is_closed() {
    let inputs = Inputs::new();
    let table: &[&[&str]] = &[
        &["check-config", "--config", "broker.toml"],
        &["policy", "check", "policy.toml"],
        &["policy", "check", "--format", "json", "policy.toml"],
        &[
            "policy",
            "explain",
            "policy.toml",
            "--claims",
            "claims.json",
        ],
        &[
            "policy",
            "explain",
            "--format",
            "json",
            "policy.toml",
            "--claims",
            "claims.json",
        ],
        &["policy", "diff", "policy.toml", "policy.toml"],
        &[
            "policy",
            "diff",
            "--format",
            "json",
            "policy.toml",
            "policy.toml",
        ],
        &["token", "inspect", "token.jwt", "--jwks", "jwks.json"],
        &[
            "token",
            "inspect",
            "--format",
            "json",
            "token.jwt",
            "--jwks",
            "jwks.json",
        ],
        &["check-config", "--help"],
        &["--version"],
    ];
    let mut failures = Vec::new();
    for args in table {
        let read = run(inputs.path(), args, Out::Read, false);
        if read.stdout.is_empty() || read.code.is_none_or(|code| code == PANIC_EXIT) {
            failures.push(format!("{args:?} with stdout read: {read:?}"));
            continue;
        }
        let closed = run(inputs.path(), args, Out::Closed, false);
        if closed.stderr.contains("panicked") || closed.code != read.code {
            failures.push(format!(
                "{args:?} with stdout closed: exit {:?} (read: {:?}), stderr:\n{}",
                closed.code, read.code, closed.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_refusal_with_both_streams_closed_keeps_its_exit_code() {
    // `check-config … 2>&1 | head -1`: stderr goes away too.
    let inputs = Inputs::new();
    std::fs::write(
        inputs.path().join("bad.toml"),
        "[server]\nlisten = 5\n[verify]\nleway_seconds = 1\n",
    )
    .unwrap();
    let args = ["check-config", "--config", "bad.toml"];
    let read = run(inputs.path(), &args, Out::Read, false);
    assert_eq!(read.code, Some(64), "{read:?}");
    let closed = run(inputs.path(), &args, Out::Closed, true);
    assert_eq!(closed.code, Some(64), "{closed:?}");
}

#[tokio::test]
async fn dev_keeps_serving_when_nobody_reads_its_banner() {
    // The banner is printed once the listeners are bound and before they
    // serve, so an answer on the admin port proves it was written.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin) = (free_port(), free_port());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = tokio::process::Command::new(binary())
        .args([
            "dev",
            "--listen",
            &listen.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            unreachable!("dev exited ({status}) with stdout closed:\n{stderr}");
        }
        let answer = client
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .ok();
        if answer.is_some_and(|answer| answer.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dev did not serve within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
}
