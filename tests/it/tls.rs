//! TLS on the main listener, with a real rustls client and certificates made
//! at test time: handshake and issuance, a client that trusts another CA,
//! mutual TLS, certificate reload (SIGHUP and polling) without dropping open
//! connections, a bad rotation, a stalled handshake, and a bad certificate at
//! start-up.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tempfile::TempDir;

use crate::metric_assert::AssertMetric;
use crate::support::broker::{DEADLINE, RunOutput, run_to_completion};
use crate::support::{BrokerSpec, Harness, Resp, assert_issued};

/// A certificate and its key, PEM, and the certificate's DER.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// A test CA that signs server and client certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost (fresh key and serial).
    pub fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// TLS files in a directory the test owns, replaced the way a secret
/// rotation does: write aside, then rename over.
pub struct TlsDir {
    dir: TempDir,
}

impl TlsDir {
    pub fn new(server: &Leaf, client_ca: Option<&str>) -> Self {
        let this = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        this.install(server);
        if let Some(ca) = client_ca {
            std::fs::write(this.path("ca.crt"), ca).unwrap();
        }
        this
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces certificate and key.
    pub fn install(&self, leaf: &Leaf) {
        self.replace("tls.crt", &leaf.cert_pem);
        self.replace("tls.key", &leaf.key_pem);
    }

    pub fn replace(&self, name: &str, text: &str) {
        let staged = self.path(&format!(".{name}.new"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, self.path(name)).unwrap();
    }

    /// Points the broker's `[server]` TLS keys at these files.
    pub fn configure(&self, spec: &mut BrokerSpec, mtls: bool) {
        spec.set("server.tls_cert", path_text(&self.path("tls.crt")));
        spec.set("server.tls_key", path_text(&self.path("tls.key")));
        if mtls {
            spec.set("server.client_ca", path_text(&self.path("ca.crt")));
        }
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// A rustls client configuration trusting `ca_pem`, optionally presenting `identity`.
pub fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// An HTTPS client (connection pool of its own) for `client_config`.
pub fn https_client(config: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .tls_backend_preconfigured(config)
        .tls_info(true)
        .build()
        .unwrap()
}

/// `https://127.0.0.1:PORT` of the broker's main listener.
pub fn https_base(h: &Harness) -> String {
    h.broker.base_url.replacen("http://", "https://", 1)
}

/// A JSON POST (the harness's reqwest has no `json` feature).
pub fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap())
}

/// A sent request's answer plus the certificate the server presented.
pub async fn send(request: reqwest::RequestBuilder) -> Result<(Resp, Vec<u8>), reqwest::Error> {
    let response = request.send().await?;
    let peer = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok((
        Resp {
            status,
            headers,
            body,
        },
        peer,
    ))
}

/// The certificate a fresh connection sees (GET /issue: 405, no token needed).
async fn served_certificate(h: &Harness, ca_pem: &str) -> Vec<u8> {
    let client = https_client(client_config(ca_pem, None));
    let (resp, peer) = send(client.get(format!("{}/issue", https_base(h))))
        .await
        .unwrap();
    assert_eq!(resp.status, 405, "{}", resp.text());
    peer
}

/// Polls fresh connections until one is served `expected`.
async fn wait_for_certificate(h: &Harness, ca_pem: &str, expected: &[u8]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while served_certificate(h, ca_pem).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within {DEADLINE:?}; output:\n{}",
            h.broker.lines().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn issuance_over_tls() {
    let pki = Pki::new("server CA");
    let server = pki.server();
    let files = TlsDir::new(&server, None);
    let h = Harness::start_with(|spec| files.configure(spec, false)).await;
    let client = https_client(client_config(&pki.ca_pem(), None));
    let (resp, peer) = send(post_json(
        &client,
        &format!("{}/issue", https_base(&h)),
        &json!({"oidc_token": h.token().build()}),
    ))
    .await
    .unwrap();
    assert_issued(&resp);
    assert_eq!(peer, server.der);

    // Plain HTTP to the TLS listener gets no answer from the broker.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("{}/issue", h.broker.base_url))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_the_server() {
    let pki = Pki::new("server CA");
    let files = TlsDir::new(&pki.server(), None);
    let h = Harness::start_with(|spec| files.configure(spec, false)).await;
    let stranger = Pki::new("another CA");
    let client = https_client(client_config(&stranger.ca_pem(), None));
    let err = send(client.get(format!("{}/issue", https_base(&h))))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let files = TlsDir::new(&server_pki.server(), Some(&client_pki.ca_pem()));
    let h = Harness::start_with(|spec| files.configure(spec, true)).await;
    let url = format!("{}/issue", https_base(&h));
    let body = json!({"oidc_token": h.token().build()});

    let anonymous = https_client(client_config(&server_pki.ca_pem(), None));
    let err = send(post_json(&anonymous, &url, &body)).await.unwrap_err();
    assert!(!err.is_status(), "no answer without a certificate: {err:?}");

    let stranger = Pki::new("another client CA").client("ci-runner");
    let wrong_ca = https_client(client_config(&server_pki.ca_pem(), Some(&stranger)));
    let err = send(post_json(&wrong_ca, &url, &body)).await.unwrap_err();
    assert!(
        !err.is_status(),
        "no answer for a foreign certificate: {err:?}"
    );

    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value_or_zero("ci_http_requests_total", &[("route", "/issue")]),
        0.0,
        "refused clients never reach the router"
    );
    assert_eq!(h.sts.calls(), 0);

    let trusted = https_client(client_config(
        &server_pki.ca_pem(),
        Some(&client_pki.client("ci-runner")),
    ));
    let (resp, _) = send(post_json(&trusted, &url, &body)).await.unwrap();
    assert_issued(&resp);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_open_connections() {
    let pki = Pki::new("server CA");
    let (first, second) = (pki.server(), pki.server());
    let files = TlsDir::new(&first, None);
    let h = Harness::start_with(|spec| {
        files.configure(spec, false);
        // Only SIGHUP reloads here; idle connections stay open meanwhile.
        spec.set("server.tls_reload_seconds", 0);
        spec.set("server.header_read_timeout_seconds", 300);
    })
    .await;
    let url = format!("{}/issue", https_base(&h));
    let kept = https_client(client_config(&pki.ca_pem(), None));
    let (resp, peer) = send(kept.get(&url)).await.unwrap();
    assert_eq!((resp.status, &peer), (405, &first.der));

    files.install(&second);
    h.broker.signal("HUP");
    wait_for_certificate(&h, &pki.ca_pem(), &second.der).await;

    // The connection opened before the reload still serves, with the
    // certificate it was opened with.
    let (resp, peer) = send(kept.get(&url)).await.unwrap();
    assert_eq!((resp.status, &peer), (405, &first.der));

    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_tls_reloads_total", &[("result", "ok")], 1.0);
    h.broker
        .wait_for_line("the reload log line", |line| {
            line.contains("TLS certificate reloaded")
        })
        .await;
    // The policy watcher shares SIGHUP and is unaffected: still ready.
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_by_polling() {
    let pki = Pki::new("server CA");
    let (first, second) = (pki.server(), pki.server());
    let files = TlsDir::new(&first, None);
    let h = Harness::start_with(|spec| {
        files.configure(spec, false);
        spec.set("server.tls_reload_seconds", 1);
    })
    .await;
    assert_eq!(served_certificate(&h, &pki.ca_pem()).await, first.der);
    files.install(&second);
    wait_for_certificate(&h, &pki.ca_pem(), &second.der).await;
}

#[tokio::test]
async fn a_bad_rotation_keeps_the_old_certificate() {
    let pki = Pki::new("server CA");
    let first = pki.server();
    let files = TlsDir::new(&first, None);
    let h = Harness::start_with(|spec| {
        files.configure(spec, false);
        spec.set("server.tls_reload_seconds", 0);
    })
    .await;
    // A new certificate whose key never arrived.
    files.replace("tls.crt", &pki.server().cert_pem);
    h.broker.signal("HUP");
    crate::support::broker::eventually("a failed TLS reload", || {
        h.broker
            .lines()
            .into_iter()
            .find(|line| line.contains("TLS reload failed"))
    })
    .await;
    assert_eq!(served_certificate(&h, &pki.ca_pem()).await, first.der);
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_tls_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn a_stalled_handshake_is_disconnected() {
    let pki = Pki::new("server CA");
    let files = TlsDir::new(&pki.server(), None);
    let h = Harness::start_with(|spec| {
        files.configure(spec, false);
        spec.set("server.header_read_timeout_seconds", 1);
    })
    .await;
    let address = h.broker.base_url.trim_start_matches("http://").to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        // Half a TLS record header, then silence.
        stream.write_all(&[0x16, 0x03]).unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).map_err(|err| err.kind())
    })
    .await
    .unwrap();
    assert_eq!(read, Ok(0), "the broker should close the connection");
}

#[tokio::test]
async fn a_key_that_does_not_match_stops_start_up_with_exit_64() {
    let pki = Pki::new("server CA");
    let files = TlsDir::new(&pki.server(), None);
    files.replace("tls.key", &pki.server().key_pem);
    let mut spec = BrokerSpec::new("https://issuer.example", "http://127.0.0.1:9", "");
    spec.policy = crate::support::DEFAULT_POLICY.to_owned();
    files.configure(&mut spec, false);
    let dir = tempfile::tempdir().unwrap();
    let config = spec.write_to(dir.path());
    let config_arg = path_text(&config);
    let out: RunOutput = run_to_completion(&["serve", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    let expected = format!(
        "{}: key `server.tls_key`: {}: ",
        config.display(),
        files.path("tls.key").display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.all());
    assert!(out.stderr.contains("private key"), "{}", out.all());

    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(out.stderr.contains("server.tls_key"), "{}", out.all());
}
