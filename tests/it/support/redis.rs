//! A real `redis-server` for replay-store tests: one per test, on its own free
//! loopback port, no persistence; killed on drop. It can be stopped (the
//! process is gone: connections are refused), frozen (SIGSTOP: connections
//! are accepted but nothing answers) and started again on the same port. With
//! [`RedisServer::start_tls`] it speaks only TLS (`--port 0 --tls-port`),
//! with a server certificate for `localhost` and 127.0.0.1 from a CA made for
//! the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use tempfile::TempDir;

/// The TLS side of a server: its files, and the CA that signed its certificate.
struct Tls {
    dir: TempDir,
}

impl Tls {
    /// A fresh CA, and a server certificate for localhost and 127.0.0.1 signed by it.
    fn generate() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}
/// A running (or deliberately stopped) `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls: Option<Tls>,
}

/// Whether `redis-server` can be run (or the test must skip).
fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    super::tool_available("redis-server", found, "scripts/test.sh installs it")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(port: u16, tls: Option<&Tls>) -> Child {
    let listen: Vec<String> = match tls {
        None => vec!["--port".into(), port.to_string()],
        Some(tls) => vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            tls.path("server.pem"),
            "--tls-key-file".into(),
            tls.path("server.key"),
            "--tls-ca-cert-file".into(),
            tls.path("ca.pem"),
            // Server authentication only: the broker has no client certificate.
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    };
    let child = Command::new("redis-server")
        .args(listen)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    let deadline = std::time::Instant::now() + super::broker::DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it accepts;
    /// `None` (the test skips) when `redis-server` is not installed, see
    /// [`super::tool_available`].
    pub fn start() -> Option<Self> {
        if !have_redis() {
            return None;
        }
        let port = free_port();
        Some(Self {
            child: Some(spawn(port, None)),
            port,
            tls: None,
        })
    }

    /// Starts a TLS-only server (plain port off) with a certificate from a
    /// CA made for it; see [`RedisServer::ca_file`]. `None` as for
    /// [`RedisServer::start`].
    pub fn start_tls() -> Option<Self> {
        if !have_redis() {
            return None;
        }
        let port = free_port();
        let tls = Tls::generate();
        Some(Self {
            child: Some(spawn(port, Some(&tls))),
            port,
            tls: Some(tls),
        })
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS
    /// server, for `replay.redis_url`.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        let tls = self.tls.as_ref().expect("not a TLS server");
        tls.dir.path().join("ca.pem")
    }

    /// Kills the server (SIGKILL) and waits for it: its port refuses
    /// connections until [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(self.port, self.tls.as_ref()));
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server process.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts connections,
    /// nothing answers. The hang case, unlike [`RedisServer::stop`].
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
