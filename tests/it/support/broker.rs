//! Runs the real `attestation-broker` binary against a config written to a
//! temporary directory, captures its output line by line, and talks to it;
//! or serves the same config in this process (`Broker::start_in_process`).

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test, as cargo built it for this test binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_attestation-broker");

/// The binary to run: `IT_BROKER_BIN` when set, else [`BIN`]. Worktrees that
/// share one `CARGO_TARGET_DIR` also share `target/debug/attestation-broker`,
/// and another tree's build can replace it mid-run; pointing this at a private
/// copy pins the binary under test.
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("IT_BROKER_BIN").unwrap_or_else(|| BIN.into())
}
/// The static AWS key id the broker signs STS requests with.
pub const BROKER_AWS_ACCESS_KEY_ID: &str = "AKIDTESTBROKER";
/// The broker's own AWS secret key: must never appear in its output.
pub const BROKER_AWS_SECRET: &str = "BrokerOwnSecretKey-9f8e7d6c5b4a-DO-NOT-LOG";
/// Deadline for anything the harness waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `probe` until it returns `Some`, for at most [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything needed to write a broker's config and policy and start it.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    /// The config file, before `policy.file` is filled in.
    pub config: toml::Table,
    /// The policy file's text.
    pub policy: String,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// Wait for `/readyz` = 200 before returning from [`Broker::start`].
    pub wait_ready: bool,
}

impl BrokerSpec {
    /// A config trusting `issuer` (audience [`super::tokens::AUDIENCE`]) and
    /// calling STS at `sts_url`, with short timeouts.
    pub fn new(issuer: &str, sts_url: &str, policy: &str) -> Self {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]

[verify]
leeway_seconds = 10

[jwks]
fetch_timeout_seconds = 2

[sts]
region = "us-east-1"
endpoint_url = "{sts_url}"
connect_timeout_seconds = 1
attempt_timeout_seconds = 2
operation_timeout_seconds = 4
max_attempts = 3

[policy]
file = "policy.toml"

[log]
format = "json"
level = "info"
"#,
            audience = super::tokens::AUDIENCE,
        );
        Self {
            config: toml::from_str(&text).unwrap(),
            policy: policy.to_owned(),
            env: Vec::new(),
            wait_ready: true,
        }
    }

    /// Sets `section.key` (or `key`) to `value`, creating the section if needed.
    pub fn set(&mut self, dotted: &str, value: impl Into<toml::Value>) -> &mut Self {
        let mut table = &mut self.config;
        let mut parts: Vec<&str> = dotted.split('.').collect();
        let last = parts.pop().unwrap();
        for part in parts {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().unwrap();
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Sets `key` of the `index`th `[[issuers]]` entry.
    pub fn set_issuer_key(
        &mut self,
        index: usize,
        key: &str,
        value: impl Into<toml::Value>,
    ) -> &mut Self {
        let issuers = self
            .config
            .get_mut("issuers")
            .and_then(toml::Value::as_array_mut)
            .unwrap();
        issuers[index]
            .as_table_mut()
            .unwrap()
            .insert(key.to_owned(), value.into());
        self
    }

    /// Appends another `[[issuers]]` entry.
    pub fn add_issuer(&mut self, issuer: &str, audiences: &[&str]) -> &mut Self {
        let mut entry = toml::Table::new();
        entry.insert("issuer".to_owned(), issuer.into());
        entry.insert("audiences".to_owned(), audiences.to_vec().into());
        let issuers = self
            .config
            .get_mut("issuers")
            .and_then(toml::Value::as_array_mut)
            .unwrap();
        issuers.push(toml::Value::Table(entry));
        self
    }

    /// Adds an environment variable for the process.
    pub fn env(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Writes `broker.toml` and `policy.toml` into `dir`; returns the config path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, &self.policy).unwrap();
        let mut config = self.config.clone();
        if let Some(policy) = config.get_mut("policy").and_then(toml::Value::as_table_mut)
            && policy.get("file").and_then(toml::Value::as_str) == Some("policy.toml")
        {
            policy.insert("file".to_owned(), policy_path.display().to_string().into());
        }
        let config_path = dir.join("broker.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        config_path
    }
}

/// The environment every broker process gets: nothing inherited but PATH.
fn base_command(args: &[&str], extra_env: &[(String, String)]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", BROKER_AWS_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", BROKER_AWS_SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .envs(
            extra_env
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn collect_lines(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    lines.lock().unwrap().push(line);
                }
            }
        }
    });
}

/// Outcome of a command run to completion.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit code; `None` when killed by a signal (or by the harness deadline).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl RunOutput {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args` to completion (killed after [`DEADLINE`]).
pub async fn run_to_completion(args: &[&str], extra_env: &[(String, String)]) -> RunOutput {
    let mut child = base_command(args, extra_env).spawn().unwrap();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    collect_lines(child.stdout.take().unwrap(), Arc::clone(&stdout));
    collect_lines(child.stderr.take().unwrap(), Arc::clone(&stderr));
    let status = {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let code = status.and_then(|status| status.code());
    let join = |lines: &Arc<Mutex<Vec<String>>>| lines.lock().unwrap().join("\n");
    // The reader threads drop their handle at EOF, which follows the exit.
    let drained = tokio::time::Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&stdout) > 1 || Arc::strong_count(&stderr) > 1 {
        if tokio::time::Instant::now() >= drained {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    RunOutput {
        code,
        stdout: join(&stdout),
        stderr: join(&stderr),
    }
}

/// A long-running command other than `serve` (e.g. `dev`); killed on drop.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts the binary with `args`, capturing stdout and stderr by line.
    pub fn spawn(args: &[&str], extra_env: &[(String, String)]) -> Self {
        let mut child = base_command(args, extra_env).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), Arc::clone(&lines));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&lines));
        Self { child, lines }
    }

    /// Every output line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line matching `matches` (fails early if the process exits).
    pub async fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| matches(line)) {
                return line;
            }
            let exited = self.child.try_wait().unwrap();
            let output = self.lines().join("\n");
            assert!(
                exited.is_none(),
                "exited ({exited:?}) before {what}; output:\n{output}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {DEADLINE:?}; output:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- process output ----\n{}\n---- end of process output ----",
                self.lines().join("\n")
            );
        }
    }
}

/// An HTTP answer, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(value) => value,
            Err(err) => unreachable!(
                "status {}: body is not JSON ({err}): {}",
                self.status,
                self.text()
            ),
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    /// The `x-request-id` header (asserts it is there and not empty).
    pub fn request_id(&self) -> String {
        let id = self.header("x-request-id").unwrap_or_default();
        assert!(
            !id.is_empty(),
            "no x-request-id header on a {} answer: {}",
            self.status,
            self.text()
        );
        id
    }

    /// Status line, headers and body as one string, for leak checks.
    pub fn everything(&self) -> String {
        let mut all = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            all.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        all.push_str(&self.text());
        all
    }
}

/// One request to the main listener.
#[derive(Clone, Debug)]
pub struct Req {
    /// Path and query, e.g. `/issue?format=credential_process`.
    pub path: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Token for `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
    /// Body bytes (may be empty).
    pub body: Vec<u8>,
}

impl Req {
    /// `POST /issue` with a JSON body.
    pub fn json(body: &Value) -> Self {
        Self {
            path: "/issue".to_owned(),
            content_type: Some("application/json".to_owned()),
            bearer: None,
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    /// `POST /issue` with raw bytes and the given content type.
    pub fn raw(content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            path: "/issue".to_owned(),
            content_type: content_type.map(str::to_owned),
            bearer: None,
            body: body.into(),
        }
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    /// Changes the path (and query).
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self
    }
}

/// Parses a raw HTTP/1.1 response (Content-Length or read-to-close body).
fn parse_http_response(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n");
    let Some(split) = split else {
        unreachable!(
            "no HTTP response head in {:?}",
            String::from_utf8_lossy(raw)
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap();
        headers.append(
            name,
            reqwest::header::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = length {
        body.truncate(length);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// What runs a [`Broker`].
enum Runner {
    /// The binary, as `serve --config`.
    Process(Child),
    /// The real router in this process (see `in_process.rs`).
    InProcess(super::in_process::InProcess),
}

/// A running broker, a process or in this process; stopped on drop.
pub struct Broker {
    runner: Runner,
    lines: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT` of the main listener.
    pub base_url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin_url: String,
    client: reqwest::Client,
    _dir: TempDir,
}

/// The HTTP client of every broker.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A JSON log line's top-level string field.
pub fn field(line: &Value, name: &str) -> Option<String> {
    match line.get(name)? {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Broker {
    /// Writes the spec to a temporary directory, starts `serve`, waits for the
    /// listening line (and for readiness when the spec asks).
    pub async fn start(spec: &BrokerSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = spec.write_to(dir.path());
        let config_arg = config_path.display().to_string();
        let mut child = base_command(&["serve", "--config", &config_arg], &spec.env)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), Arc::clone(&lines));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&lines));

        let deadline = tokio::time::Instant::now() + DEADLINE;
        let (listen, admin_listen) = loop {
            let found = lines.lock().unwrap().iter().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                if field(&value, "message").as_deref() != Some("broker listening") {
                    return None;
                }
                Some((field(&value, "listen")?, field(&value, "admin_listen")?))
            });
            if let Some(found) = found {
                break found;
            }
            let exited = child.try_wait().unwrap();
            let output = lines.lock().unwrap().join("\n");
            assert!(
                exited.is_none(),
                "broker exited ({exited:?}) before listening; output:\n{output}"
            );
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                unreachable!(
                    "no `broker listening` line with listen/admin_listen within {DEADLINE:?}; output:\n{output}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self::serving(
            spec,
            Runner::Process(child),
            lines,
            (listen, admin_listen),
            dir,
        )
        .await
    }

    /// Like [`Broker::start`], but serves the spec in this process: same
    /// config file, same checks, same routers on real sockets, and the log
    /// lines (audit events included) the binary would print. `spec.env`
    /// reaches the configuration as it would the process. No process: for
    /// signals, exit codes and start-up output, use [`Broker::start`].
    pub async fn start_in_process(spec: &BrokerSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = spec.write_to(dir.path());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (runner, listen, admin_listen) =
            super::in_process::start(&config_path, &spec.env, Arc::clone(&lines)).await;
        Self::serving(
            spec,
            Runner::InProcess(runner),
            lines,
            (listen, admin_listen),
            dir,
        )
        .await
    }

    /// A started broker (process or in this process) listening on `addrs`
    /// (public, admin); waits for readiness when the spec asks for it.
    async fn serving(
        spec: &BrokerSpec,
        runner: Runner,
        lines: Arc<Mutex<Vec<String>>>,
        addrs: (impl std::fmt::Display, impl std::fmt::Display),
        dir: tempfile::TempDir,
    ) -> Self {
        let (listen, admin_listen) = addrs;
        let broker = Self {
            runner,
            lines,
            base_url: format!("http://{listen}"),
            admin_url: format!("http://{admin_listen}"),
            client: client(),
            _dir: dir,
        };
        if spec.wait_ready {
            broker.wait_ready().await;
        }
        broker
    }

    /// The process, which an in-process broker does not have.
    fn child(&mut self) -> &mut Child {
        match &mut self.runner {
            Runner::Process(child) => child,
            Runner::InProcess(_) => unreachable!("an in-process broker has no process"),
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let response = self.admin_get("/readyz").await;
            if response.status == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker not ready within {DEADLINE:?}: last /readyz {} {}; output:\n{}",
                response.status,
                response.text(),
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        match &self.runner {
            Runner::Process(child) => child.id(),
            Runner::InProcess(_) => unreachable!("an in-process broker has no process"),
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`) to the process, with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits (at most [`DEADLINE`]) for the process to exit; its exit code,
    /// `None` when a signal ended it.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child();
        let status = eventually("the broker to exit", || child.try_wait().unwrap()).await;
        status.code()
    }

    /// Every output line so far (stdout and stderr interleaved).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every audit event so far (`"target":"audit"` lines, parsed).
    pub fn audit_events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|value| field(value, "target").as_deref() == Some("audit"))
            .collect()
    }

    /// Waits for a line matching `matches`.
    pub async fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        eventually(what, || self.lines().into_iter().find(|line| matches(line))).await
    }

    /// Waits for the audit event of `request_id`.
    pub async fn wait_for_audit(&self, request_id: &str) -> Value {
        eventually(&format!("the audit event of request {request_id}"), || {
            self.audit_events()
                .into_iter()
                .find(|event| field(event, "request_id").as_deref() == Some(request_id))
        })
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends `request` to the main listener.
    pub async fn call(&self, request: Req) -> Resp {
        let mut builder = self
            .client
            .post(format!("{}{}", self.base_url, request.path));
        if let Some(content_type) = &request.content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &request.bearer {
            builder = builder.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(builder.body(request.body)).await
    }

    /// Sends hand-written HTTP/1.1 bytes (`head` ends with the blank line) on a
    /// fresh connection and reads the answer. For bodies the broker refuses
    /// before reading them: the write may fail once it has answered, and an
    /// HTTP client would report that instead of the answer.
    pub async fn call_tcp(&self, head: String, body: Vec<u8>) -> Resp {
        use std::io::Write as _;
        let address = self.base_url.trim_start_matches("http://").to_owned();
        tokio::task::spawn_blocking(move || {
            let stream = std::net::TcpStream::connect(&address).unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = writer
                    .write_all(head.as_bytes())
                    .and_then(|()| writer.write_all(&body));
            });
            let mut raw = Vec::new();
            let mut reader = BufReader::new(&stream);
            let _ = reader.read_to_end(&mut raw);
            parse_http_response(&raw)
        })
        .await
        .unwrap()
    }

    /// `POST /issue` with `body` as JSON.
    pub async fn issue(&self, body: &Value) -> Resp {
        self.call(Req::json(body)).await
    }

    /// `GET` on the main listener.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(format!("{}{path}", self.base_url)))
            .await
    }

    /// `GET` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Resp {
        self.send(self.client.get(format!("{}{path}", self.admin_url)))
            .await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Metrics {
        let response = self.admin_get("/metrics").await;
        assert_eq!(response.status, 200, "/metrics: {}", response.text());
        Metrics(response.text())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Runner::InProcess(broker) => broker.stop(),
        }
        if std::thread::panicking() {
            // The test failed: show what the broker said.
            eprintln!(
                "---- broker output ----\n{}\n---- end of broker output ----",
                self.lines().join("\n")
            );
        }
    }
}

/// A Prometheus text exposition.
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include every pair in
    /// `labels`; `None` when no sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut total = None;
        for line in self.0.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (label_text, value_text) = if let Some(rest) = rest.strip_prefix('{') {
                let Some((inside, after)) = rest.split_once('}') else {
                    continue;
                };
                (inside, after)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                continue;
            };
            if !labels
                .iter()
                .all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")))
            {
                continue;
            }
            let Some(number) = value_text
                .split_whitespace()
                .next()
                .and_then(|text| text.parse::<f64>().ok())
            else {
                continue;
            };
            *total.get_or_insert(0.0) += number;
        }
        total
    }

    /// Like [`Metrics::value`], 0 when absent.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether a metric family called `name` is exposed (`# TYPE` line or sample).
    pub fn has_family(&self, name: &str) -> bool {
        self.0.lines().any(|line| {
            line.strip_prefix("# TYPE ")
                .is_some_and(|rest| rest.split_whitespace().next() == Some(name))
                || line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    }
}
