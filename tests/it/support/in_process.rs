//! The real broker in this test process: the configuration `serve` would
//! read, loaded and checked as `serve` does, `build_app`'s routers served by
//! `App::serve` on real 127.0.0.1 sockets. Where the binary adds nothing a
//! test looks at (start-up, signals, TLS, the log set-up), this serves the
//! same answers without a process per broker.
//!
//! Each broker runs on its own runtime on its own threads. Every thread of
//! that runtime logs to a subscriber of its own, formatted as the binary
//! formats JSON logs (`telemetry.rs`), so `Broker::lines` and
//! `Broker::audit_events` read the same lines as for a process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use attestation_broker::{AppOptions, build_app, cli};
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::broker::{BROKER_AWS_ACCESS_KEY_ID, BROKER_AWS_SECRET, DEADLINE};

/// A broker serving in this process; [`InProcess::stop`] (or dropping it)
/// starts its graceful shutdown.
#[derive(Debug)]
pub struct InProcess {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _thread: JoinHandle<()>,
}

impl InProcess {
    /// Ends the serving loop as a shutdown signal would.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The environment the binary is started with (see `base_command`), as the
/// configuration loader reads it; `extra` as `BrokerSpec::env`.
fn binary_env(extra: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from(
        [
            ("AWS_ACCESS_KEY_ID", BROKER_AWS_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", BROKER_AWS_SECRET),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    if let Some(path) = std::env::var_os("PATH") {
        env.insert("PATH".to_owned(), path.to_string_lossy().into_owned());
    }
    env.extend(extra.iter().cloned());
    env
}

/// Appends each log line to `lines`.
#[derive(Clone)]
struct LineWriter {
    lines: Arc<Mutex<Vec<String>>>,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut partial = self.partial.lock().unwrap();
        partial.extend_from_slice(buf);
        while let Some(end) = partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            self.lines.lock().unwrap().push(line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The binary's JSON log subscriber (`telemetry.rs`), writing to `lines`.
fn log_dispatch(level: &str, lines: Arc<Mutex<Vec<String>>>) -> Dispatch {
    let writer = LineWriter {
        lines,
        partial: Arc::default(),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(level).unwrap())
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .finish();
    Dispatch::new(subscriber)
}

thread_local! {
    /// The log subscriber of the broker whose runtime owns this thread.
    static LOG_GUARD: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// Loads the configuration at `config_path` as `serve` does and serves it on
/// a runtime of its own. Returns once both listeners are bound and the first
/// key fetch is done (as the binary's `broker listening` line), with the
/// main and admin addresses; start-up errors fail the test, with the log.
pub async fn start(
    config_path: &Path,
    extra_env: &[(String, String)],
    lines: Arc<Mutex<Vec<String>>>,
) -> (InProcess, SocketAddr, SocketAddr) {
    let env = binary_env(extra_env);
    let config = match cli::load_checked_config(config_path, &env) {
        Ok(config) => config,
        Err(err) => unreachable!("the broker would not start: configuration error:\n{err}"),
    };
    let dispatch = log_dispatch(&config.log.level, Arc::clone(&lines));
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&on_start);
            LOG_GUARD.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| {
            LOG_GUARD.with(|slot| slot.borrow_mut().take());
        })
        .build()
        .unwrap();
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _guard = tracing::dispatcher::set_default(&dispatch);
        runtime.block_on(async move {
            let options = AppOptions {
                aws_credentials: Some(aws_credential_types::Credentials::new(
                    BROKER_AWS_ACCESS_KEY_ID,
                    BROKER_AWS_SECRET,
                    None,
                    None,
                    "environment",
                )),
                ..AppOptions::default()
            };
            let (listen, admin_listen) = (config.server.listen, config.server.admin_listen);
            let started = async {
                let app = build_app(config, options).await?;
                let public = tokio::net::TcpListener::bind(listen).await?;
                let admin = tokio::net::TcpListener::bind(admin_listen).await?;
                app.start_background().await;
                anyhow::Ok((app, public, admin))
            };
            let (app, public, admin) = match started.await {
                Ok(started) => started,
                Err(err) => {
                    let _ = listening_tx.send(Err(format!("{err:#}")));
                    return;
                }
            };
            let addresses = (public.local_addr().unwrap(), admin.local_addr().unwrap());
            let _ = listening_tx.send(Ok(addresses));
            let shutdown = async {
                let _ = shutdown_rx.await;
            };
            if let Err(err) = app.serve(public, admin, shutdown).await {
                tracing::error!(error = format!("{err:#}"), "broker failed");
            }
        });
    });
    // Awaited, not blocked on: the issuer it fetches keys from may be
    // served by this test's runtime.
    let (public, admin) = match tokio::time::timeout(DEADLINE, listening_rx).await {
        Ok(Ok(Ok(addresses))) => addresses,
        Ok(Ok(Err(err))) => unreachable!(
            "the broker failed to start: {err}; log:\n{}",
            lines.lock().unwrap().join("\n")
        ),
        Ok(Err(_)) | Err(_) => unreachable!(
            "the broker did not listen within {DEADLINE:?}; log:\n{}",
            lines.lock().unwrap().join("\n")
        ),
    };
    let broker = InProcess {
        shutdown: Some(shutdown_tx),
        _thread: thread,
    };
    (broker, public, admin)
}
