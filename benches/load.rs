//! Load benchmark of the release broker over loopback: the parts specific to
//! this service. The load itself comes from well-kept tools where they fit.
//!
//! What it does: starts the development issuer (discovery + JWKS) and the fake
//! STS of `attestation_broker::dev` in this process, spawns the RELEASE broker
//! as in production (`serve --config FILE`, JSON logs to
//! `target/bench-load-broker.log`; the binary is the one Cargo builds for
//! this bench, in the release profile), and runs:
//!
//! - `closed-50`, `closed-400`: closed loop at 50 and 400 keep-alive
//!   connections, driven by `wrk` with `scripts/bench/issue.lua` (throughput;
//!   wrk's own latency figures are closed-loop and so not corrected for
//!   coordinated omission);
//! - `paced-50`: 50 connections, 1,000 requests/s in all, driven by the
//!   generator below: one thread schedules request *i* at `start + i / rate`
//!   and hands it to connection `i mod 50`; latency is clocked from that
//!   scheduled time (coordinated omission corrected, as wrk2 does) into an
//!   HdrHistogram, so a stall shows up in every request it delayed. The
//!   figure clocked from the actual send is printed beside it.
//!
//! Every request carries its own token, minted before the clock starts (the
//! broker refuses a replayed `jti`). Every answer is checked: 200 with
//! credentials of the fake STS counts as issued, anything else is counted by
//! status and makes the run fail. For each scenario it reports the broker's
//! CPU time per issuance (utime + stime of the broker process from
//! `/proc/PID/stat`, before/after, ÷ issuances) and its RSS after; and once,
//! the time from spawn to the first `GET /readyz` 200.
//!
//! Profile mode (`scripts/profile.sh` uses it): with `BENCH_CALLGRIND_OUT=FILE`
//! and `BENCH_ISSUANCES=N`, the broker runs under `valgrind --tool=callgrind`,
//! gets N issuances from 4 connections, and is stopped with SIGTERM so that
//! callgrind writes FILE.
//!
//! Native profile (`scripts/profile-native.sh` uses it): with
//! `BENCH_PERF_OUT=FILE`, `perf record` samples the broker (call stacks by
//! DWARF unwinding) for the whole timed phase of `closed-50`, and writes FILE.
//!
//! Run it with `scripts/bench.sh`. `BENCH_SCALE=0.2` scales every scenario's
//! request count; `BENCH_BROKER_BIN=PATH` uses another broker binary;
//! `BENCH_WRK=PATH` another wrk. Under `cargo test` this target only prints
//! that it is skipped. Figures go to stdout and, as JSON, to
//! `target/bench-load.json`; the exit status is 1 when any answer was wrong.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failure to set up should stop it loudly"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attestation_broker::dev::{
    DevIssuer, DevIssuerHandle, FAKE_ACCESS_KEY_PREFIX, FakeSts, FakeStsHandle, TokenRequest,
};
use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Repository every token is minted for, and the one the policy allows.
const REPOSITORY: &str = "octo-org/bench";
/// Audience minted into every token and expected by the broker.
const AUDIENCE: &str = "attestation-broker-bench";
/// Deadline of one request, from send to the end of the response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one scenario (wrk's `-d`, the generator's overall timeout).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);
/// The paced scenario: total rate and connections.
const PACED_RATE: f64 = 1_000.0;
const PACED_CONNECTIONS: usize = 50;
/// Histogram range, microseconds: 1 µs to 10 minutes, 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 600_000_000;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, where a load run does not belong.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "load benchmark: skipped (run `scripts/bench.sh`, `scripts/profile.sh` or `scripts/profile-native.sh`)"
        );
        return;
    }
    let target_dir = target_dir();
    // Cargo builds the broker binary (release profile) for this bench.
    let broker_bin = std::env::var_os("BENCH_BROKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_attestation-broker")));
    if !broker_bin.is_file() {
        eprintln!("error: broker binary {} not found", broker_bin.display());
        std::process::exit(2);
    }
    let peers_rt = runtime("bench-peers");
    let load_rt = runtime("bench-load");
    let (issuer, sts) = peers_rt.block_on(async {
        let issuer = DevIssuer::start(bind_loopback().await, AUDIENCE.to_owned())
            .await
            .expect("start the development issuer");
        let sts = FakeSts::start(bind_loopback().await)
            .await
            .expect("start the fake STS");
        (issuer, sts)
    });
    let workdir = tempfile::tempdir().expect("temporary directory");
    let config_path = write_config(workdir.path(), &issuer, &sts);

    let clean = match std::env::var_os("BENCH_CALLGRIND_OUT") {
        Some(out) => profile(
            &load_rt,
            &issuer,
            &broker_bin,
            &config_path,
            Path::new(&out),
        ),
        None => bench(
            &load_rt,
            &issuer,
            &sts,
            &broker_bin,
            &config_path,
            &target_dir,
            workdir.path(),
        ),
    };
    issuer.shutdown();
    sts.shutdown();
    drop(peers_rt);
    if !clean {
        std::process::exit(1);
    }
}

/// The three scenarios; returns whether every answer was right.
fn bench(
    load_rt: &tokio::runtime::Runtime,
    issuer: &DevIssuerHandle,
    sts: &FakeStsHandle,
    broker_bin: &Path,
    config_path: &Path,
    target_dir: &Path,
    workdir: &Path,
) -> bool {
    let scale = std::env::var("BENCH_SCALE")
        .ok()
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .filter(|scale| *scale > 0.0 && *scale <= 10.0)
                .unwrap_or_else(|| panic!("BENCH_SCALE must be a number in (0, 10], not {text:?}"))
        })
        .unwrap_or(1.0);
    let scaled = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let wrk = std::env::var_os("BENCH_WRK").unwrap_or_else(|| "wrk".into());
    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/issue.lua");
    let loadavg_before = loadavg();
    println!(
        "machine: {} × {} | load average before: {loadavg_before}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model()
    );

    let log_path = target_dir.join("bench-load-broker.log");
    let mut broker = Broker::spawn(&[], broker_bin, config_path, &log_path);
    let startup = load_rt.block_on(broker.wait_ready(Duration::from_secs(30)));
    println!(
        "broker {} ready in {:.1} ms (spawn → first /readyz 200); pid {}",
        broker_bin.display(),
        startup.as_secs_f64() * 1e3,
        broker.pid()
    );

    // Warm-up (not reported): JWKS fetched, STS connections open, caches filled.
    let warm = load_rt.block_on(drive(broker.public, mint(issuer, scaled(500)), 50, None));
    println!(
        "warm-up: {} issued, {} wrong answers",
        warm.issued,
        warm.wrong()
    );

    let scenarios: [(&str, usize, usize, bool); 3] = [
        ("closed-50", 50, scaled(30_000), false),
        ("closed-400", 400, scaled(30_000), false),
        ("paced-50", PACED_CONNECTIONS, scaled(10_000), true),
    ];
    let mut rows = Vec::new();
    for (name, connections, requests, paced) in scenarios {
        let started_mint = Instant::now();
        let tokens = mint(issuer, requests);
        println!(
            "{name}: minted {} tokens in {:.1} s",
            tokens.len(),
            started_mint.elapsed().as_secs_f64()
        );
        let perf = (name == "closed-50")
            .then(|| std::env::var_os("BENCH_PERF_OUT"))
            .flatten()
            .map(|out| Perf::attach(broker.pid(), Path::new(&out)));
        let cpu_before = broker.cpu_seconds();
        let sts_before = sts.assume_role_calls();
        let (run, cpu_after) = if paced {
            let run = load_rt.block_on(drive(broker.public, tokens, connections, Some(PACED_RATE)));
            (run, broker.cpu_seconds())
        } else {
            let probe = || (sts.assume_role_calls() - sts_before, broker.cpu_seconds());
            run_wrk(
                &wrk,
                &lua,
                broker.public,
                connections,
                &tokens,
                workdir,
                &probe,
            )
        };
        if let Some(perf) = perf {
            perf.stop();
        }
        let cpu = cpu_after - cpu_before;
        let row = Row {
            name,
            connections,
            paced,
            run,
            broker_cpu_us_per_issuance: 0.0,
            broker_cpu_seconds: cpu,
            sts_calls: sts.assume_role_calls() - sts_before,
            vm_rss_kb: status_field(broker.pid(), "VmRSS:"),
            vm_hwm_kb: status_field(broker.pid(), "VmHWM:"),
        }
        .finish();
        println!("{}", row.line());
        rows.push(row);
        if let Some(status) = broker.exited() {
            println!("broker EXITED during {name}: {status}");
            break;
        }
    }
    let still_running = broker.exited().is_none();
    let exit = broker.stop(Duration::from_secs(25));
    let loadavg_after = loadavg();
    println!("\nload average before: {loadavg_before}; after: {loadavg_after}");
    println!("launch to ready: {:.1} ms", startup.as_secs_f64() * 1e3);
    println!(
        "{:<11} {:>6} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>8}",
        "scenario",
        "conns",
        "issued",
        "wrong",
        "issued/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "CPU µs/iss",
        "RSS MB"
    );
    for row in &rows {
        println!("{}", row.table_line());
    }
    println!(
        "latency: closed-* from wrk (closed loop, not corrected for coordinated omission);\n\
         paced-50 from each request's scheduled send (corrected), rate {PACED_RATE:.0}/s."
    );
    for row in rows.iter().filter(|row| row.paced) {
        let run = &row.run;
        println!(
            "paced-50 clocked from the actual send instead (uncorrected): p50 {} p99 {} max {} ms; \
             send lag behind schedule: p50 {} p99 {} max {} ms",
            ms(run.uncorrected.p50),
            ms(run.uncorrected.p99),
            ms(run.uncorrected.max),
            ms(run.send_lag.p50),
            ms(run.send_lag.p99),
            ms(run.send_lag.max)
        );
    }
    println!("broker: {exit}");
    let wrong: u64 = rows.iter().map(|row| row.run.wrong()).sum();
    let json_path = target_dir.join("bench-load.json");
    let report = json!({
        "cpu_model": cpu_model(),
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "scale": scale,
        "launch_to_ready_ms": startup.as_secs_f64() * 1e3,
        "scenarios": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "broker_exit": exit,
    });
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).expect("serialize") + "\n",
    )
    .expect("write bench-load.json");
    println!("JSON: {}", json_path.display());
    if wrong > 0 || !still_running {
        println!("FAILED: {wrong} wrong answers; broker still running: {still_running}");
        return false;
    }
    true
}

/// `perf record` attached to the broker for one scenario.
struct Perf {
    child: Child,
}

impl Perf {
    /// Starts sampling `pid` (999 Hz, user and kernel, DWARF call stacks)
    /// into `out`, and gives perf a moment to attach before the load starts.
    fn attach(pid: u32, out: &Path) -> Self {
        let child = Command::new("perf")
            .args([
                "record",
                "--quiet",
                "-F",
                "999",
                "--call-graph",
                "dwarf,16384",
            ])
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("run perf: {err} (Debian: apt-get install linux-perf)"));
        std::thread::sleep(Duration::from_millis(500));
        Self { child }
    }

    /// Stops perf with SIGINT, as `perf record` expects, and waits for it to
    /// write its file.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait for perf");
        println!("perf record: {status}");
    }
}

/// Profile mode: the broker under callgrind, `BENCH_ISSUANCES` issuances.
fn profile(
    load_rt: &tokio::runtime::Runtime,
    issuer: &DevIssuerHandle,
    broker_bin: &Path,
    config_path: &Path,
    out: &Path,
) -> bool {
    let issuances: usize = std::env::var("BENCH_ISSUANCES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000);
    let tokens = mint(issuer, issuances);
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let wrapper = ["valgrind", "--tool=callgrind", "--quiet", &out_arg];
    let log_path = out.with_extension("broker.log");
    let mut broker = Broker::spawn(&wrapper, broker_bin, config_path, &log_path);
    load_rt.block_on(broker.wait_ready(Duration::from_secs(600)));
    let run = load_rt.block_on(drive(broker.public, tokens, 4, None));
    let exit = broker.stop(Duration::from_secs(600));
    println!(
        "profile: {} issued, {} wrong answers, {:.1} s under callgrind; broker {exit}",
        run.issued,
        run.wrong(),
        run.wall.as_secs_f64()
    );
    run.wrong() == 0 && run.issued == issuances as u64
}

/// One scenario's row in the report.
struct Row {
    name: &'static str,
    connections: usize,
    paced: bool,
    run: Run,
    broker_cpu_seconds: f64,
    broker_cpu_us_per_issuance: f64,
    sts_calls: u64,
    vm_rss_kb: u64,
    vm_hwm_kb: u64,
}

impl Row {
    fn finish(mut self) -> Self {
        self.broker_cpu_us_per_issuance =
            1e6 * self.broker_cpu_seconds / (self.run.issued.max(1) as f64);
        self
    }

    fn issued_per_sec(&self) -> f64 {
        self.run.issued as f64 / self.run.wall.as_secs_f64().max(1e-9)
    }

    fn line(&self) -> String {
        format!(
            "{}: {} issued, {} wrong {:?}, {:.0} issued/s, p50 {} p99 {} ms, broker CPU {:.0} µs/issuance, RSS {:.1} MB, STS calls {}",
            self.name,
            self.run.issued,
            self.run.wrong(),
            self.run.wrong,
            self.issued_per_sec(),
            ms(self.run.latency.p50),
            ms(self.run.latency.p99),
            self.broker_cpu_us_per_issuance,
            self.vm_rss_kb as f64 / 1024.0,
            self.sts_calls
        )
    }

    fn table_line(&self) -> String {
        let latency = &self.run.latency;
        format!(
            "{:<11} {:>6} {:>7} {:>6} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11.0} {:>8.1}",
            self.name,
            self.connections,
            self.run.issued,
            self.run.wrong(),
            self.issued_per_sec(),
            ms(latency.p50),
            ms(latency.p90),
            ms(latency.p99),
            ms(latency.p999),
            ms(latency.max),
            self.broker_cpu_us_per_issuance,
            self.vm_rss_kb as f64 / 1024.0
        )
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "connections": self.connections,
            "paced_rate": self.paced.then_some(PACED_RATE),
            "issued": self.run.issued,
            "wrong": self.run.wrong,
            "wall_s": self.run.wall.as_secs_f64(),
            "issued_per_s": self.issued_per_sec(),
            "latency_us": self.run.latency.json(),
            "latency_from_actual_send_us": self.paced.then(|| self.run.uncorrected.json()),
            "send_lag_us": self.paced.then(|| self.run.send_lag.json()),
            "broker_cpu_s": self.broker_cpu_seconds,
            "broker_cpu_us_per_issuance": self.broker_cpu_us_per_issuance,
            "sts_calls": self.sts_calls,
            "vm_rss_kb_after": self.vm_rss_kb,
            "vm_hwm_kb_after": self.vm_hwm_kb,
        })
    }
}

/// Percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    fn json(&self) -> Value {
        json!({"p50": self.p50, "p90": self.p90, "p99": self.p99, "p99.9": self.p999, "max": self.max})
    }
}

/// What one run saw.
#[derive(Debug, Default)]
struct Run {
    wall: Duration,
    issued: u64,
    /// Wrong answers by kind (status, transport error, 200 without credentials).
    wrong: BTreeMap<String, u64>,
    /// Latency reported for the scenario (paced: from the scheduled send).
    latency: Percentiles,
    /// Paced only: latency from the actual send.
    uncorrected: Percentiles,
    /// Paced only: how late each send was against its schedule.
    send_lag: Percentiles,
}

impl Run {
    fn wrong(&self) -> u64 {
        self.wrong.values().sum()
    }
}

/// Closed loop through wrk: tokens written one file per wrk thread. wrk runs
/// until every token has been issued (the STS's call count, from `probe`,
/// reaches the token count, or stops moving for 2 s); that moment ends the
/// timed phase, and `probe`'s broker CPU time then is returned with the run.
/// Then wrk gets SIGINT, prints its `done` line, and exits.
fn run_wrk(
    wrk: &std::ffi::OsStr,
    lua: &Path,
    addr: SocketAddr,
    connections: usize,
    tokens: &[HeaderValue],
    workdir: &Path,
    probe: &dyn Fn() -> (u64, f64),
) -> (Run, f64) {
    let threads = 2.min(connections);
    let dir = workdir.join("tokens");
    std::fs::create_dir_all(&dir).expect("token directory");
    let share = tokens.len().div_ceil(threads);
    for (index, chunk) in tokens.chunks(share.max(1)).enumerate() {
        let text: String = chunk
            .iter()
            .map(|value| {
                let bearer = value.to_str().expect("token is ASCII");
                format!("{}\n", bearer.trim_start_matches("Bearer "))
            })
            .collect();
        std::fs::write(dir.join(format!("tokens-{}.txt", index + 1)), text).expect("token file");
    }
    let started = Instant::now();
    let child = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", SCENARIO_TIMEOUT.as_secs()))
        .arg(format!("--timeout={}s", REQUEST_TIMEOUT.as_secs()))
        .arg("-s")
        .arg(lua)
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("run {wrk:?}: {err} (install it: `apt-get install wrk`, or set BENCH_WRK)")
        });
    let target = tokens.len() as u64;
    // The timed phase ends at the last STS call seen (so a token that never
    // arrives, reported below, does not stretch it), with the CPU time then.
    let (mut last, mut moved, mut cpu_at_move) = (0, Instant::now(), probe().1);
    loop {
        let (calls, cpu) = probe();
        if calls != last {
            (last, moved, cpu_at_move) = (calls, Instant::now(), cpu);
        }
        if calls >= target
            || moved.elapsed() > Duration::from_secs(2)
            || started.elapsed() > SCENARIO_TIMEOUT
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (wall, cpu_after) = (moved - started, cpu_at_move);
    // Let the last answers arrive, then ask wrk to finish and report.
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let output = child.wait_with_output().expect("wait for wrk");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("WRK_RESULT "))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no WRK_RESULT line; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let number = |name: &str| result.get(name).and_then(Value::as_u64).unwrap_or(0);
    let mut wrong = BTreeMap::new();
    let mut answered = number("issued");
    if number("no_credentials") > 0 {
        wrong.insert(
            "200 without credentials".to_owned(),
            number("no_credentials"),
        );
        answered += number("no_credentials");
    }
    if let Some(statuses) = result.get("other_status").and_then(Value::as_object) {
        for (status, value) in statuses {
            let value = value.as_u64().unwrap_or(0);
            wrong.insert(format!("status {status}"), value);
            answered += value;
        }
    }
    let socket_errors: Vec<String> = ["connect_errors", "read_errors", "write_errors", "timeouts"]
        .into_iter()
        .filter(|kind| number(kind) > 0)
        .map(|kind| format!("{} {}", kind.replace('_', " "), number(kind)))
        .collect();
    let unanswered = (tokens.len() as u64).saturating_sub(answered);
    if unanswered > 0 || !socket_errors.is_empty() {
        wrong.insert(
            format!("not answered (wrk: {})", socket_errors.join(", ")),
            unanswered.max(1),
        );
    }
    let run = Run {
        wall,
        issued: number("issued"),
        wrong,
        latency: Percentiles {
            p50: number("p50_us"),
            p90: number("p90_us"),
            p99: number("p99_us"),
            p999: number("p999_us"),
            max: number("max_us"),
        },
        ..Run::default()
    };
    (run, cpu_after)
}

/// What one connection saw.
struct ConnectionResult {
    latency: Histogram<u64>,
    uncorrected: Histogram<u64>,
    send_lag: Histogram<u64>,
    issued: u64,
    wrong: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HISTOGRAM_MAX_US)
}

/// Sends every token once over `connections` keep-alive connections. Closed
/// loop when `rate` is `None`; otherwise request `i` is scheduled at
/// `start + i / rate` and its latency is clocked from that time.
async fn drive(
    addr: SocketAddr,
    tokens: Vec<HeaderValue>,
    connections: usize,
    rate: Option<f64>,
) -> Run {
    let total = tokens.len();
    let mut queues = Vec::with_capacity(connections);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let sender = connect(addr).await;
        let (queue, jobs) = tokio::sync::mpsc::unbounded_channel::<(HeaderValue, Instant)>();
        queues.push(queue);
        tasks.spawn(connection_task(addr, sender, jobs));
    }
    let started = Instant::now();
    // The scheduler runs on its own thread: std's sleep is precise to tens of
    // microseconds, tokio's timer only to a millisecond.
    let scheduler = std::thread::spawn(move || {
        for (index, token) in tokens.into_iter().enumerate() {
            let due = match rate {
                Some(rate) => {
                    let due = started + Duration::from_secs_f64(index as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    due
                }
                None => started,
            };
            if let Some(queue) = queues.get(index % queues.len().max(1)) {
                let _ = queue.send((token, due));
            }
        }
        // Dropping the queues ends every connection task after its last job.
    });
    let mut run = Run::default();
    let (mut latency, mut uncorrected, mut send_lag) = (histogram(), histogram(), histogram());
    let joined = tokio::time::timeout(SCENARIO_TIMEOUT, async {
        while let Some(result) = tasks.join_next().await {
            let result = result.expect("connection task");
            latency.add(&result.latency).expect("same bounds");
            uncorrected.add(&result.uncorrected).expect("same bounds");
            send_lag.add(&result.send_lag).expect("same bounds");
            run.issued += result.issued;
            for (kind, count) in result.wrong {
                *run.wrong.entry(kind).or_default() += count;
            }
        }
    })
    .await;
    run.wall = started.elapsed();
    if joined.is_err() {
        tasks.abort_all();
        *run.wrong
            .entry("scenario timed out".to_owned())
            .or_default() += 1;
    }
    let _ = scheduler.join();
    let answered = run.issued + run.wrong.values().sum::<u64>();
    if answered < total as u64 {
        *run.wrong.entry("not answered".to_owned()).or_default() += total as u64 - answered;
    }
    if rate.is_some() {
        run.latency = Percentiles::of(&latency);
        run.uncorrected = Percentiles::of(&uncorrected);
        run.send_lag = Percentiles::of(&send_lag);
    } else {
        run.latency = Percentiles::of(&uncorrected);
    }
    run
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One connection: sends each job as soon as it arrives and the connection is free.
async fn connection_task(
    addr: SocketAddr,
    mut sender: Sender,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<(HeaderValue, Instant)>,
) -> ConnectionResult {
    let mut result = ConnectionResult {
        latency: histogram(),
        uncorrected: histogram(),
        send_lag: histogram(),
        issued: 0,
        wrong: BTreeMap::new(),
    };
    let host = HeaderValue::from_str(&addr.to_string()).expect("host header");
    while let Some((token, due)) = jobs.recv().await {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/issue")
            .header(header::HOST, host.clone())
            .header(header::AUTHORIZATION, token)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            sender
                .ready()
                .await
                .map_err(|err| format!("transport: {err}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| format!("transport: {err}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| format!("transport (body): {err}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await;
        let done = Instant::now();
        let _ = result.latency.record(micros(done - due));
        let _ = result.uncorrected.record(micros(done - sent));
        let _ = result
            .send_lag
            .record(micros(sent.saturating_duration_since(due)));
        let wrong = match answer {
            Ok(Ok((StatusCode::OK, body))) if has_fake_credentials(&body) => {
                result.issued += 1;
                continue;
            }
            Ok(Ok((StatusCode::OK, _))) => "200 without credentials".to_owned(),
            Ok(Ok((status, _))) => format!("status {}", status.as_u16()),
            Ok(Err(kind)) => kind,
            Err(_) => format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs()),
        };
        let broken = wrong.starts_with("transport") || wrong.starts_with("timeout");
        *result.wrong.entry(wrong).or_default() += 1;
        if broken {
            // The connection is gone: open another and go on.
            match try_connect(addr).await {
                Ok(fresh) => sender = fresh,
                Err(err) => {
                    *result.wrong.entry(format!("reconnect: {err}")).or_default() += 1;
                    break;
                }
            }
        }
    }
    result
}

/// A 200 body carries an `access_key_id` from the fake STS.
fn has_fake_credentials(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| value.get("access_key_id")?.as_str().map(str::to_owned))
        .is_some_and(|key| key.starts_with(FAKE_ACCESS_KEY_PREFIX))
}

async fn connect(addr: SocketAddr) -> Sender {
    try_connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to the broker at {addr}: {err}"))
}

async fn try_connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| err.to_string())?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Mints `count` fresh tokens on two threads, as `Bearer` header values.
fn mint(issuer: &DevIssuerHandle, count: usize) -> Vec<HeaderValue> {
    let request = TokenRequest::new(REPOSITORY);
    let issuer = issuer.issuer();
    let threads = 2;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let share = count / threads + usize::from(index < count % threads);
                let request = &request;
                scope.spawn(move || {
                    (0..share)
                        .map(|_| {
                            let jwt = issuer.mint(request).expect("mint a token");
                            HeaderValue::from_str(&format!("Bearer {jwt}"))
                                .expect("a JWT is a valid header value")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("minting thread"))
            .collect()
    })
}

/// The Cargo target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn bind_loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Writes the broker's configuration and policy; returns the config path.
fn write_config(dir: &Path, issuer: &DevIssuerHandle, sts: &FakeStsHandle) -> PathBuf {
    // The same policy `attestation-broker dev` serves: one role bound by ids.
    let policy = attestation_broker::cli::dev::demo_policy(REPOSITORY);
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy).expect("write policy");
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_concurrent_requests = 4096
# Every bench token comes from one repository: the per-repository limit would
# measure the limiter, not the issuance path.
rate_limit_per_repository_per_minute = 0

[[issuers]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]

[sts]
region = "us-east-1"
endpoint_url = "{sts}"

[policy]
file = "{policy}"

[log]
format = "json"
level = "info"
"#,
        issuer = issuer.issuer_url(),
        sts = sts.url(),
        policy = policy_path.display(),
    );
    let config_path = dir.join("broker.toml");
    std::fs::write(&config_path, config).expect("write config");
    config_path
}

/// The broker child process; killed if still running when dropped.
struct Broker {
    child: Child,
    log_path: PathBuf,
    spawned: Instant,
    public: SocketAddr,
    admin: SocketAddr,
}

impl Broker {
    /// Spawns `wrapper… binary serve --config CONFIG`, stdout to `log_path`.
    fn spawn(wrapper: &[&str], binary: &Path, config: &Path, log_path: &Path) -> Self {
        let log = std::fs::File::create(log_path).expect("create the broker log");
        let stderr = std::fs::File::create(log_path.with_extension("stderr"))
            .expect("create the broker stderr file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let spawned = Instant::now();
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            // Only what the broker needs: no stray BROKER_* overrides or AWS profile.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "AKIDDEVBROKER")
            .env("AWS_SECRET_ACCESS_KEY", "dev-broker-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", binary.display()));
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            child,
            log_path: log_path.to_owned(),
            spawned,
            public: unbound,
            admin: unbound,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls the log for "broker listening", then /readyz until 200; returns
    /// the time from spawn to that 200.
    async fn wait_ready(&mut self, deadline: Duration) -> Duration {
        loop {
            if self.spawned.elapsed() > deadline {
                panic!(
                    "broker not ready after {deadline:?}; see {}",
                    self.log_path.display()
                );
            }
            if let Some(status) = self.exited() {
                panic!(
                    "broker exited during start-up ({status}); see {} and its .stderr",
                    self.log_path.display()
                );
            }
            if self.public.port() == 0 {
                if let Some((public, admin)) = listening_addresses(&self.log_path) {
                    (self.public, self.admin) = (public, admin);
                }
            } else if ready(self.admin).await {
                return self.spawned.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// User + system CPU time of the whole process (all threads), seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // After the parenthesised command name: utime and stime are fields
        // 14 and 15 of the line, in clock ticks (USER_HZ = 100).
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|value| value.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }

    /// SIGTERM, then up to `grace` for the drain; returns how it ended.
    fn stop(mut self, grace: Duration) -> String {
        if let Some(status) = self.exited() {
            return format!("had already exited: {status}");
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let asked = Instant::now();
        while asked.elapsed() < grace {
            if let Some(status) = self.exited() {
                return format!(
                    "exited ({status}) {:.0} ms after SIGTERM",
                    asked.elapsed().as_secs_f64() * 1e3
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("killed: still running {grace:?} after SIGTERM")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `listen` and `admin_listen` of the "broker listening" JSON line.
fn listening_addresses(log_path: &Path) -> Option<(SocketAddr, SocketAddr)> {
    std::fs::read_to_string(log_path)
        .ok()?
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line.get("message").and_then(Value::as_str) == Some("broker listening"))
        .and_then(|line| {
            let addr = |name: &str| line.get(name)?.as_str()?.parse::<SocketAddr>().ok();
            Some((addr("listen")?, addr("admin_listen")?))
        })
}

/// `GET /readyz` on a fresh connection answered 200.
async fn ready(addr: SocketAddr) -> bool {
    let Ok(mut sender) = try_connect(addr).await else {
        return false;
    };
    let Ok(request) = Request::builder()
        .method(Method::GET)
        .uri("/readyz")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await,
        Ok(Ok(response)) if response.status() == StatusCode::OK
    )
}

/// A numeric field of `/proc/<pid>/status` (first number after the name), or 0.
fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1e3)
}
