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
