//! Load and fault test: the release broker under steady load while its
//! upstreams fail on a schedule. Run it with `scripts/fault-load.sh` (which
//! builds the release binary and this tool, the `tools` feature, first); it is
//! not part of the default test run.
//!
//! What it does, on loopback only:
//! - starts the test kit's OIDC issuer (discovery + JWKS for a key made at
//!   start) and STS (AssumeRole in the AWS Query protocol), switching their
//!   faults: JWKS `500`, `hang`, `garbage` (the discovery document truncated,
//!   the key set with no usable key); STS `Throttling`, `InternalFailure` (500),
//!   `AccessDenied`, `hang`; tokens come from the kit's minter;
//! - starts the broker binary (`--bin`) against them, with short JWKS refresh and
//!   STS timeouts so that the faults are actually met;
//! - sends `POST /issue` at `--rate` requests per second for `--duration`
//!   seconds: valid tokens, replays of tokens that were already issued,
//!   wrong-audience, expired, tampered (payload edited after signing), foreign-key
//!   (signed by key B under key A's kid), unsigned (`alg: none`), unknown-kid,
//!   policy-denied (self-hosted runner) tokens, and valid tokens of one "hot"
//!   repository sent faster than the per-repository rate limit allows (every
//!   other token names one of 1000 repositories, each far below the limit);
//! - cycles through 12 phases of `--phase` seconds, switching faults on and off
//!   (see [`SCHEDULE`]); every switch is timestamped.
//!
//! Then it judges every answer. A WRONG answer is:
//! 1. credentials (200) for anything but a valid, never-used token, the same
//!    token issued twice, or credentials the STS stub never handed out (or handed
//!    out twice): a hard failure;
//! 2. for a valid token: anything but a 200 while the STS was healthy, that is
//!    when no STS fault was in effect at any moment from `--margin-ms` before the
//!    request was sent until its answer arrived. JWKS faults do not excuse an
//!    error: the broker verifies with its cached keys. Outside those windows a
//!    503 `unavailable` is tolerated, nothing else is;
//! 3. for a token that must be refused: anything but its documented refusal
//!    (401 `invalid_token`; 403 `forbidden` for replays and policy denials),
//!    except a 503 `unavailable` when any fault was in effect from the margin
//!    before sending until the answer;
//! 4. no answer within the broker's request deadline plus 5 s;
//! 5. for the hot repository: anything but 200 or 429 `rate_limited` while the
//!    STS was healthy (503 `unavailable` is tolerated otherwise), or more
//!    requests let through the limiter (any answer but 429) than its burst plus
//!    its rate times the time elapsed since the first one.
//!
//! It prints requests sent, issued, refusals by kind, status and code, tolerated
//! errors, every wrong answer (the first 20 in detail), the broker's own
//! counters, and exits 1 when there was any wrong answer.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use attestation_broker::testkit::issuer::{Issuer, Mode};
use attestation_broker::testkit::keys::SigningKey;
use attestation_broker::testkit::sts::{Fault, Sts};
use attestation_broker::testkit::token::{TokenBuilder, now};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::time::Instant;

/// The audience the broker accepts.
const AUDIENCE: &str = "https://github.com/ourorg";
/// The broker's request deadline (`server.request_timeout_seconds`).
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a replayed token may have been issued before: well inside its
/// 300 s lifetime, so a replay is refused as a replay and not as expired.
const REPLAY_MAX_AGE: Duration = Duration::from_secs(60);
/// Wrong answers printed in detail.
const MAX_WRONG_SHOWN: usize = 20;
/// Repositories the ordinary tokens are spread over (distinct `repository_id`s),
/// so that none comes near the per-repository rate limit.
const REPOSITORIES: u64 = 1000;
/// The broker's per-repository limit (`server.rate_limit_per_repository_per_minute`).
const RATE_LIMIT_PER_MINUTE: u32 = 120;
/// The broker's burst (`server.rate_limit_burst`).
const RATE_LIMIT_BURST: u32 = 120;
/// `repository_id` of the hot repository.
const HOT_REPOSITORY_ID: &str = "999000999";

#[derive(Parser, Debug)]
#[command(
    about = "Drives the release broker at a steady rate while its JWKS and STS fail on a schedule"
)]
struct Args {
    /// Seconds of load (at most 3600).
    #[arg(long, default_value_t = 180)]
    duration: u64,
    /// Requests per second (at most 2000).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds per fault phase; 12 phases make one cycle of the schedule.
    #[arg(long, default_value_t = 15)]
    phase: u64,
    /// After a fault clears, this long (ms) must pass before a request counts
    /// as sent to healthy upstreams.
    #[arg(long, default_value_t = 3000)]
    margin_ms: u64,
    /// The broker binary to test.
    #[arg(long, default_value = "target/release/attestation-broker")]
    bin: PathBuf,
}

// ---------------------------------------------------------------- faults

/// How the issuer answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum JwksFault {
    Healthy,
    Status500,
    Hang,
    Garbage,
}

/// How the STS answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StsFault {
    Healthy,
    Throttling,
    InternalFailure,
    AccessDenied,
    Hang,
}

impl JwksFault {
    /// How the kit's issuer answers (discovery document, key set).
    fn modes(self) -> (Mode, Mode) {
        match self {
            JwksFault::Healthy => (Mode::Normal, Mode::Normal),
            JwksFault::Status500 => (Mode::Fail500, Mode::Fail500),
            JwksFault::Hang => (Mode::Hang, Mode::Hang),
            JwksFault::Garbage => (Mode::Malformed, Mode::NoUsableKey),
        }
    }
}

impl StsFault {
    /// The kit STS's standing fault.
    fn fault(self) -> Option<Fault> {
        match self {
            StsFault::Healthy => None,
            StsFault::Throttling => Some(Fault::Throttling),
            StsFault::InternalFailure => Some(Fault::InternalFailure),
            StsFault::AccessDenied => Some(Fault::AccessDenied),
            StsFault::Hang => Some(Fault::Hang),
        }
    }
}

/// One cycle of the schedule: (JWKS, STS) per phase.
const SCHEDULE: [(JwksFault, StsFault); 12] = [
    (JwksFault::Healthy, StsFault::Healthy),
    (JwksFault::Status500, StsFault::Healthy),
    (JwksFault::Healthy, StsFault::Throttling),
    (JwksFault::Healthy, StsFault::Healthy),
    (JwksFault::Hang, StsFault::Healthy),
    (JwksFault::Healthy, StsFault::InternalFailure),
    (JwksFault::Healthy, StsFault::Healthy),
    (JwksFault::Garbage, StsFault::AccessDenied),
    (JwksFault::Healthy, StsFault::Hang),
    (JwksFault::Healthy, StsFault::Healthy),
    (JwksFault::Hang, StsFault::Throttling),
    (JwksFault::Healthy, StsFault::Healthy),
];

/// The kit's servers, their current faults and every switch, timestamped.
struct Switchboard {
    issuer: Issuer,
    sts: Sts,
    history: Mutex<Vec<(Instant, JwksFault, StsFault)>>,
}

impl Switchboard {
    fn new(at: Instant, issuer: Issuer, sts: Sts) -> Self {
        Self {
            issuer,
            sts,
            history: Mutex::new(vec![(at, JwksFault::Healthy, StsFault::Healthy)]),
        }
    }

    fn set(&self, jwks: JwksFault, sts: StsFault) {
        // Record first, switch second: a request never meets an unrecorded fault.
        lock(&self.history).push((Instant::now(), jwks, sts));
        let (discovery, key_set) = jwks.modes();
        self.issuer.set_discovery_mode(discovery);
        self.issuer.set_jwks_mode(key_set);
        self.sts.set_fault(sts.fault());
    }

    /// Every (JWKS, STS) state in effect at some moment of `[from, to]`.
    fn states_during(&self, from: Instant, to: Instant) -> Vec<(JwksFault, StsFault)> {
        let history = lock(&self.history);
        let mut states = Vec::new();
        let mut before = None;
        for (at, jwks, sts) in history.iter() {
            if *at <= from {
                before = Some((*jwks, *sts));
            } else if *at <= to {
                states.push((*jwks, *sts));
            }
        }
        states.extend(before);
        states
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- tokens

/// What a request carries, and so what its answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    Replay,
    WrongAudience,
    Expired,
    Tampered,
    ForeignKey,
    Unsigned,
    UnknownKid,
    PolicyDenied,
    /// A valid token of the hot repository.
    HotRepository,
}

/// Kinds by weight, out of 100.
const MIX: [(Kind, u32); 10] = [
    (Kind::Valid, 47),
    (Kind::Replay, 10),
    (Kind::WrongAudience, 6),
    (Kind::Expired, 6),
    (Kind::Tampered, 6),
    (Kind::ForeignKey, 5),
    (Kind::Unsigned, 3),
    (Kind::UnknownKid, 6),
    (Kind::PolicyDenied, 8),
    (Kind::HotRepository, 3),
];

impl Kind {
    fn pick() -> Self {
        let mut roll = rand::rng().random_range(0..100);
        for (kind, weight) in MIX {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        Kind::Valid
    }

    /// The refusal a token of this kind must get (status, code); `None` for
    /// valid tokens.
    fn refusal(self) -> Option<(u16, &'static str)> {
        match self {
            Kind::Valid | Kind::HotRepository => None,
            Kind::Replay | Kind::PolicyDenied => Some((403, "forbidden")),
            Kind::WrongAudience
            | Kind::Expired
            | Kind::Tampered
            | Kind::ForeignKey
            | Kind::Unsigned
            | Kind::UnknownKid => Some((401, "invalid_token")),
        }
    }
}

struct Minter {
    issuer: String,
    key_a: SigningKey,
    key_b: SigningKey,
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

impl Minter {
    fn claims(&self, hot: bool) -> TokenBuilder {
        let iat = now();
        let number = rand::rng().random_range(0..REPOSITORIES);
        let (repo, repository_id) = if hot {
            (
                "ourorg/hot-repository".to_owned(),
                HOT_REPOSITORY_ID.to_owned(),
            )
        } else {
            (
                format!("ourorg/service-{number}"),
                (800_000_000 + number).to_string(),
            )
        };
        let run_id: u64 = rand::rng().random_range(10_000_000_000..20_000_000_000);
        TokenBuilder::github(&self.issuer, self.key_a.clone())
            .claim("sub", format!("repo:{repo}:ref:refs/heads/main"))
            .claim("aud", AUDIENCE)
            .claim("repository", repo.as_str())
            .claim("repository_id", repository_id)
            .claim("run_id", run_id.to_string())
            .claim("run_attempt", "1")
            .claim("check_run_id", (run_id + 7).to_string())
            .claim("actor", "fault-load")
            .claim(
                "job_workflow_ref",
                format!("{repo}/.github/workflows/deploy.yml@refs/heads/main"),
            )
            .claim("nbf", iat - 5)
            .claim("iat", iat)
            .claim("exp", iat + 300)
    }

    /// A token of `kind` (for [`Kind::Replay`] the caller supplies the token).
    fn mint(&self, kind: Kind) -> anyhow::Result<String> {
        let token = self.claims(kind == Kind::HotRepository);
        let signed = match kind {
            Kind::Valid | Kind::Replay | Kind::HotRepository => token,
            Kind::WrongAudience => token.claim("aud", "https://github.com/evilorg"),
            Kind::Expired => token.issued_at(now() - 1000).claim("nbf", now() - 1000),
            Kind::Tampered => {
                let signed = token.try_build()?;
                let edited = token
                    .claim("repository_owner_id", "666")
                    .claim("repository", "evilorg/app");
                let mut parts = signed.split('.');
                let (Some(header), Some(_), Some(signature)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    bail!("a signed token has three parts");
                };
                let claims = Value::Object(edited.claim_set().clone());
                return Ok(format!("{header}.{}.{signature}", b64_json(&claims)));
            }
            Kind::ForeignKey => token.signed_by(self.key_b.clone()),
            Kind::Unsigned => return Ok(token.build_unsigned("none")),
            Kind::UnknownKid => {
                let kid = format!("rotated-{}", rand::rng().random_range(0..1_000_000));
                token.header("kid", kid).signed_by(self.key_b.clone())
            }
            Kind::PolicyDenied => token.claim("runner_environment", "self-hosted"),
        };
        Ok(signed.try_build()?)
    }
}

// ---------------------------------------------------------------- broker

/// The broker process and what it printed.
struct BrokerProcess {
    child: tokio::process::Child,
    base_url: String,
    admin_url: String,
    audit: Arc<Mutex<BTreeMap<String, u64>>>,
    /// ERROR lines by message (the expected one: STS AccessDenied).
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Lines that are not JSON, or mention a panic.
    alarming_lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

const POLICY: &str = include_str!("../tests/fixtures/policies/fault_load.toml");

async fn start_broker(bin: &PathBuf, issuer: &str, sts: &str) -> anyhow::Result<BrokerProcess> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
request_timeout_seconds = {deadline}
max_concurrent_requests = 1024
rate_limit_per_repository_per_minute = {RATE_LIMIT_PER_MINUTE}
rate_limit_burst = {RATE_LIMIT_BURST}

[[issuers]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]

[jwks]
refresh_seconds = 2
unknown_kid_cooldown_seconds = 5
fetch_timeout_seconds = 1

[replay]
store = "memory"

[sts]
region = "us-east-1"
endpoint_url = "{sts}"
connect_timeout_seconds = 1
attempt_timeout_seconds = 1
operation_timeout_seconds = 2
max_attempts = 2

[policy]
file = "{policy}"
reload_seconds = 0

[log]
format = "json"
level = "info"
"#,
        deadline = REQUEST_DEADLINE.as_secs(),
        policy = policy.display(),
    );
    let config_path = dir.path().join("broker.toml");
    std::fs::write(&config_path, config)?;
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDFAULTLOAD")
        .env("AWS_SECRET_ACCESS_KEY", "fault-load-broker-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let audit = Arc::new(Mutex::new(BTreeMap::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let alarming_lines = Arc::new(Mutex::new(Vec::new()));
    let (listening_tx, mut listening_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    for stream in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let audit = Arc::clone(&audit);
        let errors = Arc::clone(&errors);
        let alarming_lines = Arc::clone(&alarming_lines);
        let listening_tx = listening_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    lock(&alarming_lines).push(line);
                    continue;
                };
                let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
                if text("target").as_deref() == Some("audit") {
                    let event = text("event").unwrap_or_else(|| "?".to_owned());
                    *lock(&audit).entry(event).or_default() += 1;
                } else if text("message").as_deref() == Some("broker listening") {
                    let _ = listening_tx.send((text("listen"), text("admin_listen")));
                } else if line.contains("panicked") {
                    lock(&alarming_lines).push(line);
                } else if text("level").as_deref() == Some("ERROR") {
                    let message = text("message").unwrap_or_default();
                    *lock(&errors).entry(message).or_default() += 1;
                }
            }
        });
    }
    let listening = tokio::time::timeout(Duration::from_secs(30), listening_rx.recv())
        .await
        .context("the broker did not start listening within 30 s")?;
    let Some((Some(listen), Some(admin))) = listening else {
        bail!(
            "the broker stopped before listening: {:?}",
            lock(&alarming_lines)
        );
    };
    Ok(BrokerProcess {
        child,
        base_url: format!("http://{listen}"),
        admin_url: format!("http://{admin}"),
        audit,
        errors,
        alarming_lines,
        _dir: dir,
    })
}

// ---------------------------------------------------------------- load

/// One request and its answer.
struct Outcome {
    kind: Kind,
    sent: Instant,
    answered: Instant,
    /// `None`: no answer (timeout or connection error).
    status: Option<u16>,
    code: String,
    access_key_id: Option<String>,
    jti: String,
}

/// Recently issued tokens, for replays.
type ReplayPool = Arc<Mutex<VecDeque<(Instant, String)>>>;

fn jti_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|claims| claims.get("jti").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

async fn one_request(
    client: reqwest::Client,
    url: String,
    minter: Arc<Minter>,
    pool: ReplayPool,
    kind: Kind,
) -> Outcome {
    let replay = (kind == Kind::Replay)
        .then(|| {
            let pool = lock(&pool);
            let fresh: Vec<&String> = pool
                .iter()
                .filter(|(at, _)| at.elapsed() < REPLAY_MAX_AGE)
                .map(|(_, token)| token)
                .collect();
            let index = rand::rng().random_range(0..fresh.len().max(1));
            fresh.get(index).map(|token| (*token).clone())
        })
        .flatten();
    // No issued token yet to replay: send a valid one instead.
    let kind = if kind == Kind::Replay && replay.is_none() {
        Kind::Valid
    } else {
        kind
    };
    let token = match replay {
        Some(token) => Ok(token),
        None => minter.mint(kind),
    };
    let sent = Instant::now();
    let Ok(token) = token else {
        return Outcome {
            kind,
            sent,
            answered: sent,
            status: None,
            code: "mint_failed".to_owned(),
            access_key_id: None,
            jti: String::new(),
        };
    };
    let jti = jti_of(&token);
    let body = json!({"oidc_token": token, "repo": minter_repo(&token)});
    let answer = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let (status, json) = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            let bytes = response.bytes().await.ok();
            let json = bytes.and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            (Some(status), json)
        }
        Err(_) => (None, None),
    };
    let answered = Instant::now();
    let text = |name: &str| {
        json.as_ref()
            .and_then(|json| json.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if status == Some(200) && kind == Kind::Valid {
        let mut pool = lock(&pool);
        pool.push_back((answered, token));
        while pool.len() > 4096 {
            pool.pop_front();
        }
    }
    Outcome {
        kind,
        sent,
        answered,
        status,
        code: text("error")
            .unwrap_or_else(|| if status.is_some() { "-" } else { "no_answer" }.to_owned()),
        access_key_id: text("access_key_id"),
        jti,
    }
}

/// The `repository` claim of a token (the request binds `repo` to it, as the
/// real client does).
fn minter_repo(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|claims| claims.get("repository").cloned())
        .unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- verdicts

#[derive(Default)]
struct Report {
    by_kind: BTreeMap<(Kind, String), u64>,
    tolerated: BTreeMap<(Kind, String), u64>,
    wrong: Vec<String>,
    hard: u64,
    issued: u64,
    healthy_valid: u64,
    /// Hot repository: answered, let through the limiter, limit.
    hot: (usize, usize, f64),
}

fn judge(outcomes: &[Outcome], faults: &Switchboard, margin: Duration, t0: Instant) -> Report {
    let mut report = Report::default();
    let stub_issued: HashSet<String> = faults
        .sts
        .issued()
        .into_iter()
        .map(|issued| issued.access_key_id)
        .collect();
    let mut issued_jtis = HashSet::new();
    let mut seen_keys = HashSet::new();
    for outcome in outcomes {
        let label = match outcome.status {
            Some(status) => format!("{status} {}", outcome.code),
            None => outcome.code.clone(),
        };
        *report
            .by_kind
            .entry((outcome.kind, label.clone()))
            .or_default() += 1;
        let window_start = outcome.sent.checked_sub(margin).unwrap_or(t0);
        let states = faults.states_during(window_start, outcome.answered);
        let sts_healthy = states.iter().all(|(_, sts)| *sts == StsFault::Healthy);
        let all_healthy = states
            .iter()
            .all(|state| *state == (JwksFault::Healthy, StsFault::Healthy));
        if matches!(outcome.kind, Kind::Valid | Kind::HotRepository) && sts_healthy {
            report.healthy_valid += 1;
        }
        let tolerable = outcome.status == Some(503) && outcome.code == "unavailable";
        let mut problems = Vec::new();
        match (outcome.status, outcome.kind.refusal()) {
            (Some(200), refusal) => {
                report.issued += 1;
                if refusal.is_some() {
                    problems.push("HARD: credentials for a token that must be refused".to_owned());
                } else if !issued_jtis.insert(outcome.jti.clone()) {
                    problems.push("HARD: the same token issued twice".to_owned());
                }
                match &outcome.access_key_id {
                    Some(key) if stub_issued.contains(key) && seen_keys.insert(key.clone()) => {}
                    other => problems.push(format!(
                        "HARD: credentials the STS did not hand out exactly once: {other:?}"
                    )),
                }
            }
            (None, _) => problems.push(format!(
                "no answer within the deadline + 5 s ({:.1} s)",
                outcome.answered.duration_since(outcome.sent).as_secs_f64()
            )),
            (Some(429), None) if outcome.kind == Kind::HotRepository => {
                if outcome.code != "rate_limited" {
                    problems.push("429 without rate_limited".to_owned());
                }
            }
            (Some(_), None) if sts_healthy => {
                problems.push("a valid token refused while the STS was healthy".to_owned());
            }
            (Some(_), None) if tolerable => {
                *report
                    .tolerated
                    .entry((outcome.kind, label.clone()))
                    .or_default() += 1;
            }
            (Some(_), None) => problems
                .push("a valid token refused with something other than 503 unavailable".to_owned()),
            (Some(status), Some((want_status, want_code)))
                if status == want_status && outcome.code == want_code => {}
            (Some(_), Some(_)) if !all_healthy && tolerable => {
                *report
                    .tolerated
                    .entry((outcome.kind, label.clone()))
                    .or_default() += 1;
            }
            (Some(_), Some((want_status, want_code))) => {
                problems.push(format!("expected {want_status} {want_code}"));
            }
        }
        let at = outcome.sent.duration_since(t0).as_secs_f64();
        for problem in problems {
            if problem.starts_with("HARD") {
                report.hard += 1;
            }
            report.wrong.push(format!(
                "t={at:7.2}s {:?}: {label}: {problem} (faults in window: {states:?})",
                outcome.kind
            ));
        }
    }
    // The limiter: what it let through (anything but a 429) of the hot
    // repository, against its burst plus its rate since the first request.
    let hot: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.kind == Kind::HotRepository && outcome.status.is_some())
        .collect();
    if let Some(first) = hot.first() {
        let span = hot
            .iter()
            .map(|outcome| outcome.answered.duration_since(first.sent))
            .max()
            .unwrap_or_default();
        let allowed = f64::from(RATE_LIMIT_BURST)
            + f64::from(RATE_LIMIT_PER_MINUTE) / 60.0 * span.as_secs_f64()
            + 1.0;
        let through = hot
            .iter()
            .filter(|outcome| outcome.status != Some(429))
            .count();
        report.hot = (hot.len(), through, allowed);
        if through as f64 > allowed {
            report.hard += 1;
            report.wrong.push(format!(
                "HARD: the rate limiter let {through} requests of the hot repository through, at most {allowed:.0} allowed"
            ));
        }
    }
    report
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration == 0 || args.duration > 3600 {
        bail!("--duration must be 1..=3600 seconds");
    }
    if args.rate == 0 || args.rate > 2000 {
        bail!("--rate must be 1..=2000 requests per second");
    }
    if args.phase == 0 {
        bail!("--phase must be at least 1 second");
    }
    let margin = Duration::from_millis(args.margin_ms);
    let t0 = Instant::now();
    let key_a = SigningKey::generate_async("fault-load-a").await?;
    let key_b = SigningKey::generate_async("fault-load-b").await?;
    let issuer = Issuer::start(vec![key_a.jwk()]).await?;
    let issuer_url = issuer.issuer();
    let sts = Sts::start().await?;
    let sts_url = sts.url().to_string();
    let faults = Arc::new(Switchboard::new(t0, issuer, sts));

    let mut broker = start_broker(&args.bin, &issuer_url, &sts_url).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_DEADLINE + Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()?;
    // Ready: JWKS fetched once.
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{}/readyz", broker.admin_url))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            break;
        }
        if Instant::now() > ready_deadline {
            bail!("the broker did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let minter = Arc::new(Minter {
        issuer: issuer_url.clone(),
        key_a,
        key_b,
    });
    println!(
        "fault-load: {} s at {} req/s, phases of {} s, margin {} ms; broker {}",
        args.duration,
        args.rate,
        args.phase,
        args.margin_ms,
        args.bin.display()
    );

    // The schedule.
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let scheduler = {
        let faults = Arc::clone(&faults);
        let phase = Duration::from_secs(args.phase);
        tokio::spawn(async move {
            let mut at = start;
            for (jwks, sts) in SCHEDULE.iter().cycle() {
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                faults.set(*jwks, *sts);
                println!(
                    "  t={:6.1}s  jwks={jwks:?} sts={sts:?}",
                    at.duration_since(start).as_secs_f64()
                );
                at += phase;
            }
            faults.set(JwksFault::Healthy, StsFault::Healthy);
        })
    };

    // The load: one request per tick, each on its own task.
    let url = format!("{}/issue", broker.base_url);
    let pool: ReplayPool = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = args.duration.saturating_mul(u64::from(args.rate));
    let mut sent = 0u64;
    while Instant::now() < end && sent < limit {
        ticker.tick().await;
        let task = one_request(
            client.clone(),
            url.clone(),
            Arc::clone(&minter),
            Arc::clone(&pool),
            Kind::pick(),
        );
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(task.await);
        });
        sent += 1;
    }
    let sending_took = start.elapsed();
    drop(tx);
    let _ = scheduler.await;
    let mut outcomes = Vec::new();
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    outcomes.sort_by_key(|outcome| outcome.sent);

    let metrics = client
        .get(format!("{}/metrics", broker.admin_url))
        .send()
        .await?
        .text()
        .await?;
    // Let the last audit lines arrive, then stop the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = broker.child.start_kill();
    let _ = broker.child.wait().await;

    let report = judge(&outcomes, &faults, margin, t0);
    println!(
        "\nsent {} requests in {:.1} s ({:.1} req/s); answered {}; issued {}",
        sent,
        sending_took.as_secs_f64(),
        sent as f64 / sending_took.as_secs_f64().max(0.001),
        outcomes
            .iter()
            .filter(|outcome| outcome.status.is_some())
            .count(),
        report.issued
    );
    println!(
        "valid requests sent in STS-healthy windows: {}",
        report.healthy_valid
    );
    println!(
        "hot repository: {} answered, {} let through the rate limiter (at most {:.0} allowed)",
        report.hot.0, report.hot.1, report.hot.2
    );
    println!("\nanswers by kind (status code: count):");
    let mut current = None;
    for ((kind, label), count) in &report.by_kind {
        if current != Some(*kind) {
            println!("  {kind:?}");
            current = Some(*kind);
        }
        println!("    {label:<28} {count}");
    }
    println!("\ntolerated (503 unavailable inside a fault window + margin):");
    for ((kind, label), count) in &report.tolerated {
        println!("  {kind:?} {label}: {count}");
    }
    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .filter(|outcome| outcome.status.is_some())
        .map(|outcome| outcome.answered.duration_since(outcome.sent))
        .collect();
    latencies.sort();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies
            .get(index)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    println!(
        "\nlatency ms (all answers): p50 {:.1}  p99 {:.1}  max {:.1}",
        quantile(0.5),
        quantile(0.99),
        quantile(1.0)
    );
    println!(
        "issuer: {} requests ({} while faulty); STS: {} calls ({} while faulty), {} credentials handed out",
        faults.issuer.total_hits(),
        faults.issuer.faulted_hits(),
        faults.sts.calls(),
        faults.sts.faulted_calls(),
        faults.sts.issued().len()
    );
    println!("audit events: {:?}", lock(&broker.audit));
    println!("broker counters:");
    for line in metrics.lines().filter(|line| {
        !line.starts_with('#')
            && [
                "ci_creds_issued_total",
                "ci_sts_errors_total",
                "ci_jwks_refresh_total",
                "ci_replay_rejections_total",
                "ci_token_rejections_total",
                "ci_opa_policy_denials_total",
                "ci_rate_limited_total",
                "ci_http_requests_total{route=\"/issue\"",
            ]
            .iter()
            .any(|name| line.starts_with(name))
    }) {
        println!("  {line}");
    }
    println!("broker ERROR lines by message:");
    for (message, count) in lock(&broker.errors).iter() {
        println!("  {count:>6}  {message}");
    }
    let alarming = lock(&broker.alarming_lines).clone();
    if !alarming.is_empty() {
        println!(
            "\nbroker lines that are not JSON or mention a panic: {}",
            alarming.len()
        );
        for line in alarming.iter().take(5) {
            println!("  {line}");
        }
    }
    println!(
        "\nwrong answers: {} ({} hard: credentials that should not have been issued)",
        report.wrong.len(),
        report.hard
    );
    for line in report.wrong.iter().take(MAX_WRONG_SHOWN) {
        println!("  {line}");
    }
    let answered = outcomes
        .iter()
        .filter(|outcome| outcome.status.is_some())
        .count() as u64;
    let audited: u64 = lock(&broker.audit).values().sum();
    if audited != answered {
        println!("note: {audited} audit events for {answered} answered requests");
    }
    if report.wrong.is_empty() {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        std::process::exit(1);
    }
}
