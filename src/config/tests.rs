use super::*;

const MINIMAL: &str = include_str!("../../tests/fixtures/configs/minimal.toml");

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
    assert_eq!(
        config.verify.algorithms,
        vec![jsonwebtoken::Algorithm::RS256]
    );
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
fn algorithms_are_typed_when_read_and_each_bad_entry_is_named() {
    let text = format!("{MINIMAL}\n[verify]\nalgorithms = [\"ES256\", \"PS256\"]\n");
    let config = Config::parse(&text, "broker.toml", &env(&[])).unwrap();
    assert_eq!(
        config.verify.algorithms,
        vec![
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::PS256
        ]
    );
    let message = problems(
        &format!("{MINIMAL}\n[verify]\nalgorithms = [\"RS256\", \"HS256\", \"XX1\"]\n"),
        &[],
    );
    for line in [
        "broker.toml: key `verify.algorithms[1]`: `HS256` is never accepted",
        "broker.toml: key `verify.algorithms[2]`: unknown algorithm `XX1`",
    ] {
        assert!(
            message.lines().any(|found| found.starts_with(line)),
            "{line}\nnot in:\n{message}"
        );
    }
    assert_eq!(message.lines().count(), 2, "{message}");
    // The refused entry is the only problem: its removal leaving the list
    // empty is not reported as a second one.
    let message = problems(
        &format!("{MINIMAL}\n[verify]\nalgorithms = [\"none\"]\n"),
        &[],
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn a_type_error_does_not_hide_range_problems_of_other_sections() {
    let text = format!(
        "{MINIMAL}\n[server]\nlisten = 5\n[jwks]\nrefresh_seconds = 0\n[sts]\nendpoint_url = \"http://sts.example.com\"\n"
    );
    let message = problems(&text, &[]);
    for line in [
        "broker.toml: key `server.listen`: invalid type",
        "broker.toml: key `jwks.refresh_seconds`: must be at least 1",
        "broker.toml: key `sts.endpoint_url`: http:// is accepted only for loopback",
    ] {
        assert!(
            message.lines().any(|found| found.starts_with(line)),
            "{line}\nnot in:\n{message}"
        );
    }
    assert_eq!(message.lines().count(), 3, "{message}");
    // A check that reads a bad value is skipped: the default standing in
    // for it is not compared with the others.
    let text = format!("{MINIMAL}\n[jwks]\nrefresh_seconds = \"soon\"\nmax_stale_seconds = 1\n");
    let message = problems(&text, &[]);
    assert!(message.contains("key `jwks.refresh_seconds`"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn redis_urls_are_checked_when_read_and_their_password_never_shown() {
    for (url, reason) in [
        (
            "rediss://127.0.0.1:6379#insecure",
            "`#insecure` would turn off",
        ),
        (
            "http://127.0.0.1:6379",
            "scheme must be redis:// or rediss://",
        ),
        ("127.0.0.1:6379", "not a URL"),
        ("redis://127.0.0.1:6379/db", "not a usable Redis URL"),
    ] {
        let message = problems(
            &format!("{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_url = \"{url}\"\n"),
            &[],
        );
        assert!(
            message.starts_with(&format!("broker.toml: key `replay.redis_url`: {reason}")),
            "{url}: {message}"
        );
        assert_eq!(message.lines().count(), 1, "{url}: {message}");
    }
    let text = format!(
        "{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_url = \"rediss://broker:s3cret@redis.example.com:6380/0\"\n"
    );
    let config = Config::parse(&text, "broker.toml", &env(&[])).unwrap();
    assert!(config.replay.redis_url.as_ref().unwrap().is_tls());
    let shown = format!("{config:?}");
    assert!(shown.contains("redis.example.com"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
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
fn type_errors_in_different_sections_are_all_reported() {
    let text = format!(
        "{MINIMAL}\n[server]\nlisten = 5\n[verify]\nleway_seconds = 5\n[replay]\nstore = \"mongo\"\n"
    );
    let message = problems(&text, &[]);
    for line in [
        "broker.toml: key `replay.store`: unknown variant `mongo`",
        "broker.toml: key `server.listen`: invalid type: integer `5`",
        "broker.toml: key `verify.leway_seconds`: unknown field `leway_seconds`",
    ] {
        assert!(
            message.lines().any(|found| found.starts_with(line)),
            "{line}\nnot in:\n{message}"
        );
    }
    assert_eq!(message.lines().count(), 3, "{message}");
}

#[test]
fn several_errors_in_one_section_are_all_reported() {
    let text = format!(
        "{MINIMAL}\n[jwks]\nrefresh_seconds = \"soon\"\nmax_body_bytes = -1\ncooldown = 1\n"
    );
    let message = problems(&text, &[]);
    for key in [
        "jwks.cooldown",
        "jwks.max_body_bytes",
        "jwks.refresh_seconds",
    ] {
        assert!(
            message.contains(&format!("broker.toml: key `{key}`: ")),
            "{key}: {message}"
        );
    }
    assert_eq!(message.lines().count(), 3, "{message}");
}

#[test]
fn errors_in_array_sections_keep_the_file_indices() {
    // issuers[0] lacks `issuer` (it is dropped to carry on), so what is then
    // the first element is still reported as issuers[1].
    let text = r#"
[[issuers]]
audiences = ["a"]

[[issuers]]
issuer = "https://b.example.com"
audiences = [1, "b", 2]

[[issuers]]
issuer = "https://c.example.com"
audiences = ["c"]
jwks = "https://c.example.com/keys"

[policy]
file = "p.toml"
"#;
    let message = problems(text, &[]);
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "one line per problem, and no second line for a dropped entry:\n{message}"
    );
    for key in [
        "issuers[0].issuer",
        "issuers[1].audiences[0]",
        "issuers[1].audiences[2]",
        "issuers[2].jwks",
    ] {
        assert!(
            message.contains(&format!("broker.toml: key `{key}`: ")),
            "{key}: {message}"
        );
    }
}

#[test]
fn a_missing_section_is_reported_with_the_type_errors() {
    let text =
        "[[issuers]]\nissuer = \"https://a\"\naudiences = [\"x\"]\n[server]\nlisten = true\n";
    let message = problems(text, &[]);
    assert!(
        message.contains("broker.toml: key `policy`: missing field `policy`"),
        "{message}"
    );
    assert!(message.contains("key `server.listen`"), "{message}");
    assert_eq!(message.lines().count(), 2, "{message}");
    // A section without its required key: one line, at the key.
    let message = problems(
        &format!("{MINIMAL}\n[log]\nlevel = 3\n")
            .replace("file = \"config/policy.toml\"", "reload_seconds = 1"),
        &[],
    );
    assert!(
        message.contains("broker.toml: key `policy.file`: missing field `file`"),
        "{message}"
    );
    assert!(message.contains("key `log.level`"), "{message}");
    assert_eq!(message.lines().count(), 2, "{message}");
}

#[test]
fn type_errors_name_the_variable_they_came_from() {
    let message = problems(
        &format!("{MINIMAL}\n[server]\nlisten = 5\n"),
        &[
            ("BROKER_SERVER__ADMIN_LISTEN", "nowhere"),
            ("BROKER_ISSUERS__0__AUDIENCES", "7"),
        ],
    );
    assert!(
        message.contains(
            "broker.toml: key `server.admin_listen` (from environment BROKER_SERVER__ADMIN_LISTEN): invalid socket address"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "broker.toml: key `issuers[0].audiences` (from environment BROKER_ISSUERS__0__AUDIENCES): invalid type"
        ),
        "{message}"
    );
    assert!(
        message.contains("broker.toml: key `server.listen`: "),
        "{message}"
    );
}

#[test]
fn a_syntax_error_names_line_and_column_and_no_key() {
    let message = problems("[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \n", &[]);
    assert!(
        message.starts_with("broker.toml: line 3, column 16: not valid TOML: "),
        "{message}"
    );
    assert!(!message.contains("key `-`"), "{message}");
}

#[test]
fn a_missing_configuration_file_is_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let message = Config::load(&path, &env(&[])).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: cannot read the configuration file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

/// A configuration in its own directory, with a policy file next to it.
fn config_dir(policy_key: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/policy.toml"), "").unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        MINIMAL.replace("file = \"config/policy.toml\"", policy_key),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn relative_paths_in_the_file_are_taken_from_its_directory() {
    // `config/policy.toml` also exists relative to the working directory
    // (the crate root, where the tests run): the file's directory must win.
    let (dir, path) = config_dir("file = \"config/policy.toml\"");
    let config = Config::load(&path, &env(&[])).unwrap();
    assert_eq!(config.policy.file, dir.path().join("config/policy.toml"));
}

#[test]
fn relative_paths_from_the_environment_are_taken_from_the_working_directory() {
    let (_dir, path) = config_dir("file = \"config/policy.toml\"");
    let config = Config::load(
        &path,
        &env(&[("BROKER_POLICY__FILE", "config/policy.toml")]),
    )
    .unwrap();
    assert_eq!(
        config.policy.file,
        std::path::Path::new("config/policy.toml")
    );
}

#[test]
fn missing_files_are_all_named_with_the_path_tried() {
    let (dir, path) = config_dir(
        "file = \"nope.toml\"\n[server]\ntls_cert = \"/absent/tls.crt\"\ntls_key = \"tls.key\"",
    );
    let message = Config::load(&path, &env(&[("BROKER_POLICY__REGO", "absent.rego")]))
        .unwrap_err()
        .to_string();
    let file = path.display();
    for line in [
        format!(
            "{file}: key `policy.file`: cannot read {} (nope.toml relative to the configuration file's directory): No such file",
            dir.path().join("nope.toml").display()
        ),
        format!(
            "{file}: key `policy.rego` (from environment BROKER_POLICY__REGO): cannot read absent.rego (relative to the working directory): No such file"
        ),
        format!("{file}: key `server.tls_cert`: cannot read /absent/tls.crt: No such file"),
        format!(
            "{file}: key `server.tls_key`: cannot read {} (tls.key relative to the configuration file's directory): No such file",
            dir.path().join("tls.key").display()
        ),
    ] {
        assert!(message.contains(&line), "{line}\nnot in:\n{message}");
    }
    assert_eq!(message.lines().count(), 4, "{message}");
}
