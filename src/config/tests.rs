use super::*;

const MINIMAL: &str = r#"
[[issuers]]
issuer = "https://token.actions.githubusercontent.com"
audiences = ["https://github.com/ourorg"]

[policy]
file = "config/policy.toml"
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn problems(text: &str, vars: &[(&str, &str)]) -> String {
    Config::parse(text, "broker.toml", &env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = Config::parse(MINIMAL, "broker.toml", &env(&[])).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(config.server.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.verify.leeway_seconds, 10);
    assert_eq!(config.verify.algorithms, vec!["RS256"]);
    assert_eq!(config.jwks.refresh_seconds, 300);
    assert_eq!(config.jwks.unknown_kid_cooldown_seconds, 30);
    assert_eq!(config.jwks.max_stale_seconds, 86_400);
    assert_eq!(config.replay.store, ReplayStoreKind::Memory);
    assert_eq!(config.sts.region, "us-east-1");
    assert_eq!(config.server.max_body_bytes, 65_536);
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let text = format!("{MINIMAL}\n[verify]\nleway_seconds = 5\n");
    let message = problems(&text, &[]);
    assert!(
        message.contains("broker.toml: key `verify.leway_seconds`: unknown field"),
        "{message}"
    );
    assert!(message.contains("leway_seconds"), "{message}");
    let message = problems(&format!("{MINIMAL}\n[bogus]\nx = 1\n"), &[]);
    assert!(message.contains("bogus"), "{message}");
}

#[test]
fn env_overrides_win_and_are_typed() {
    let vars = [
        ("BROKER_VERIFY__LEEWAY_SECONDS", "20"),
        ("BROKER_SERVER__LISTEN", "127.0.0.1:1234"),
        ("BROKER_ISSUERS__0__AUDIENCES", r#"["a", "b"]"#),
        ("UNRELATED", "x"),
    ];
    let config = Config::parse(MINIMAL, "broker.toml", &env(&vars)).unwrap();
    assert_eq!(config.verify.leeway_seconds, 20);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:1234");
    assert_eq!(config.issuers[0].audiences, vec!["a", "b"]);
}

#[test]
fn env_override_of_unknown_key_is_an_error() {
    let message = problems(MINIMAL, &[("BROKER_VERIFY__LEEWAY", "3")]);
    assert!(message.contains("leeway"), "{message}");
    let message = problems(MINIMAL, &[("BROKER_ISSUERS__3__AUDIENCES", "x")]);
    assert!(
        message.contains("from environment BROKER_ISSUERS__3__AUDIENCES"),
        "{message}"
    );
}

#[test]
fn plain_http_is_only_for_loopback() {
    for (url, ok) in [
        ("http://127.0.0.1:9000", true),
        ("http://localhost:9000", true),
        ("http://[::1]:9000", true),
        ("https://example.com", true),
        ("http://example.com", false),
        ("http://10.0.0.1", false),
        ("ftp://127.0.0.1", false),
    ] {
        let text = MINIMAL.replace("https://token.actions.githubusercontent.com", url);
        let result = Config::parse(&text, "broker.toml", &env(&[]));
        assert_eq!(result.is_ok(), ok, "{url}: {result:?}");
    }
    let message = problems(
        &format!("{MINIMAL}\n[sts]\nendpoint_url = \"http://sts.example.com\"\n"),
        &[],
    );
    assert!(
        message.contains("key `sts.endpoint_url`: http:// is accepted only for loopback"),
        "{message}"
    );
}

#[test]
fn hmac_and_none_are_refused_even_when_configured() {
    for alg in ["none", "HS256", "hs512", "NONE"] {
        let message = problems(
            &format!("{MINIMAL}\n[verify]\nalgorithms = [\"{alg}\"]\n"),
            &[],
        );
        assert!(message.contains("verify.algorithms[0]"), "{message}");
        assert!(message.contains("never accepted"), "{message}");
    }
}

#[test]
fn all_problems_are_reported_together() {
    let text = r#"
[[issuers]]
issuer = "http://example.com"
audiences = []
[jwks]
refresh_seconds = 0
[policy]
file = "p.toml"
"#;
    let message = problems(text, &[]);
    assert!(message.contains("issuers[0].issuer"), "{message}");
    assert!(message.contains("issuers[0].audiences"), "{message}");
    assert!(message.contains("jwks.refresh_seconds"), "{message}");
}

#[test]
fn missing_issuers_and_policy_are_errors() {
    let message = problems("[policy]\nfile = \"p.toml\"\n", &[]);
    assert!(message.contains("key `issuers`"), "{message}");
    let message = problems(
        "[[issuers]]\nissuer = \"https://a\"\naudiences = [\"x\"]\n",
        &[],
    );
    assert!(message.contains("policy"), "{message}");
}

#[test]
fn redis_store_needs_a_url() {
    let message = problems(&format!("{MINIMAL}\n[replay]\nstore = \"redis\"\n"), &[]);
    assert!(message.contains("replay.redis_url"), "{message}");
}

#[test]
fn server_limits_have_documented_defaults() {
    let server = Config::parse(MINIMAL, "broker.toml", &env(&[]))
        .unwrap()
        .server;
    assert_eq!(server.max_header_bytes, 65_536);
    assert_eq!(server.max_headers, 64);
    assert_eq!(server.header_read_timeout_seconds, 10);
    assert_eq!(server.body_read_timeout_ms, 5000);
    assert_eq!(server.request_timeout_seconds, 15);
    assert_eq!(server.max_concurrent_requests, 1024);
    assert_eq!(server.rate_limit_per_repository_per_minute, 120);
    assert_eq!(server.rate_limit_burst, 120);
    assert_eq!(server.shutdown_grace_seconds, 20);
    assert_eq!(server.tls_reload_seconds, 30);
    assert!(server.tls_files().is_none());
}

#[test]
fn server_limits_out_of_range_are_errors() {
    let text = format!(
        "{MINIMAL}\n[server]\nmax_header_bytes = 4096\nmax_headers = 0\nheader_read_timeout_seconds = 0\nbody_read_timeout_ms = 0\nrate_limit_burst = 0\n"
    );
    let message = problems(&text, &[]);
    for key in [
        "server.max_header_bytes",
        "server.max_headers",
        "server.header_read_timeout_seconds",
        "server.body_read_timeout_ms",
        "server.rate_limit_burst",
    ] {
        assert!(
            message.contains(&format!("key `{key}`")),
            "{key}: {message}"
        );
    }
    // With the rate limit off, the burst is not used and not checked.
    let text = format!(
        "{MINIMAL}\n[server]\nrate_limit_per_repository_per_minute = 0\nrate_limit_burst = 0\n"
    );
    assert!(Config::parse(&text, "broker.toml", &env(&[])).is_ok());
}

#[test]
fn tls_keys_come_in_pairs_and_mtls_needs_tls() {
    let message = problems(&format!("{MINIMAL}\n[server]\ntls_cert = \"a.crt\"\n"), &[]);
    assert!(
        message.contains("key `server.tls_key`: required"),
        "{message}"
    );
    let message = problems(
        &format!("{MINIMAL}\n[server]\nclient_ca = \"ca.crt\"\n"),
        &[],
    );
    assert!(message.contains("key `server.client_ca`"), "{message}");
}

#[test]
fn tls_files_that_do_not_load_stop_the_start_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("policy.toml"), "").unwrap();
    std::fs::write(dir.path().join("tls.crt"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("tls.key"),
        "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n",
    )
    .unwrap();
    let config_path = dir.path().join("broker.toml");
    let text = MINIMAL.replace("config/policy.toml", "policy.toml")
        + "\n[server]\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n";
    std::fs::write(&config_path, text).unwrap();
    let message = Config::load(&config_path, &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "{}: key `server.tls_key`: ",
            config_path.display()
        )),
        "{message}"
    );
    assert!(message.contains("tls.key"), "{message}");
    assert!(message.contains("no PRIVATE KEY"), "{message}");

    // Relative paths resolve next to the configuration file.
    std::fs::write(
        dir.path().join("tls.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let config = Config::load(&config_path, &env(&[])).unwrap();
    assert_eq!(config.server.tls_cert, Some(dir.path().join("tls.crt")));
}
