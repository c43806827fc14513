use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::*;

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate PEM, key PEM, leaf DER)
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn write_files(dir: &Path, cert: &str, key: &str, ca: Option<&str>) -> TlsFiles {
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    if let Some(ca) = ca {
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
    }
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: ca.map(|_| dir.join("ca.crt")),
    }
}

#[test]
fn a_good_pair_loads_with_http1_alpn_and_optional_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf();
    let files = write_files(dir.path(), &cert, &key, None);
    let config = load_server_config(&files).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);

    let files = write_files(dir.path(), &cert, &key, Some(&pki.ca.pem()));
    assert!(load_server_config(&files).is_ok());
}

#[test]
fn each_bad_file_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf();
    let (_, other_key, _) = pki.leaf();

    let files = write_files(dir.path(), &cert, &other_key, None);
    let err = load_server_config(&files).unwrap_err();
    assert_eq!(err.config_key(), "server.tls_key", "{err}");
    assert!(err.to_string().contains("tls.key"), "{err}");

    let files = write_files(dir.path(), "not a certificate", &key, None);
    let err = load_server_config(&files).unwrap_err();
    assert_eq!(err.config_key(), "server.tls_cert", "{err}");
    assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");

    let files = write_files(dir.path(), &cert, &cert, None);
    let err = load_server_config(&files).unwrap_err();
    assert_eq!(err.config_key(), "server.tls_key", "{err}");
    assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");

    let files = write_files(dir.path(), &cert, &key, Some("empty"));
    let err = load_server_config(&files).unwrap_err();
    assert_eq!(err.config_key(), "server.client_ca", "{err}");

    let mut files = write_files(dir.path(), &cert, &key, None);
    files.cert = dir.path().join("missing.crt");
    let err = load_server_config(&files).unwrap_err();
    assert_eq!(err.config_key(), "server.tls_cert", "{err}");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

#[test]
fn errors_never_carry_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf();
    let garbled = key.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!");
    let files = write_files(dir.path(), &cert, &garbled, None);
    let err = load_server_config(&files).unwrap_err().to_string();
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        assert!(!err.contains(line), "{err}");
    }
}

#[tokio::test]
async fn reload_replaces_on_change_and_keeps_the_old_config_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert_a, key_a, _) = pki.leaf();
    let files = write_files(dir.path(), &cert_a, &key_a, None);
    let listener = TlsListener::load(files.clone(), Duration::from_secs(1)).unwrap();
    let metrics = Metrics::new().unwrap();
    let mut watcher = listener.watcher(metrics.clone());
    let before = Arc::as_ptr(&listener.live.get_inner());
    assert_eq!(watcher.reload(false), ReloadOutcome::Unchanged);
    assert_eq!(watcher.reload(true), ReloadOutcome::Unchanged);

    // A rotation caught half-way: new certificate, old key.
    let (cert_b, key_b, der_b) = pki.leaf();
    std::fs::write(&files.cert, &cert_b).unwrap();
    assert!(matches!(
        watcher.reload(false),
        ReloadOutcome::Failed { .. }
    ));
    assert_eq!(Arc::as_ptr(&listener.live.get_inner()), before);
    assert_eq!(
        watcher.reload(false),
        ReloadOutcome::Unchanged,
        "a failed content is reported once"
    );

    std::fs::write(&files.key, &key_b).unwrap();
    let ReloadOutcome::Replaced { version } = watcher.reload(false) else {
        panic!("expected a reload");
    };
    assert_eq!(version, hex::encode(sha2::Sha256::digest(&der_b)));
    assert_ne!(Arc::as_ptr(&listener.live.get_inner()), before);

    let text = metrics.render();
    assert!(
        text.contains("ci_tls_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ci_tls_reloads_total{result=\"error\"} 1"),
        "{text}"
    );
}
