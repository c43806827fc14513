//! Loading: every error names its file and key path; warnings.

use super::{compile_ok, load_error};
use crate::policy::{Policy, PolicyError, PolicyWarning, RoleCredential, RoleSummary};

const ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole";

/// A valid role with `extra` spliced into its table and `rules` after it.
fn role(extra: &str, rules: &str) -> String {
    format!("[[roles]]\nname = \"deploy\"\nrole_arn = \"{ARN}\"\n{extra}\n{rules}")
}

const ALLOW: &str = "[[roles.allow]]\nrepository_owner_id = \"1234567\"\n";

#[test]
fn errors_name_the_file_and_key() {
    // (policy text, expected key path, expected fragment of the reason)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("version = 2\n{}", role("", ALLOW)),
            "version",
            "unknown top-level key",
        ),
        (
            role("colour = \"red\"", ALLOW),
            "roles[0].colour",
            "unknown role key",
        ),
        (
            role("", "[[roles.allow]]\n"),
            "roles[0].allow[0]",
            "at least one condition",
        ),
        (
            role("", ""),
            "roles[0].allow",
            "at least one `[[roles.allow]]`",
        ),
        (
            role("allow = []", ""),
            "roles[0].allow",
            "at least one `[[roles.allow]]`",
        ),
        (
            role("", &format!("{ALLOW}[[roles.deny]]\n")),
            "roles[0].deny[0]",
            "at least one condition",
        ),
        (
            role("", &format!("{ALLOW}ref = []\n")),
            "roles[0].allow[0].ref",
            "empty pattern list",
        ),
        (
            role("", &format!("{ALLOW}Ref = \"x\"\n")),
            "roles[0].allow[0].Ref",
            "claim names are lowercase",
        ),
        (
            role("", &format!("{ALLOW}\"job-id\" = \"x\"\n")),
            "roles[0].allow[0].job-id",
            "claim names are lowercase",
        ),
        (
            role("", &format!("{ALLOW}\"a.b\" = \"x\"\n")),
            "roles[0].allow[0].\"a.b\"",
            "claim names are lowercase",
        ),
        (
            role("", &format!("{ALLOW}ref = [\"refs/heads/main\", 1.5]\n")),
            "roles[0].allow[0].ref[1]",
            "floats are not patterns",
        ),
        (
            role("", &format!("{ALLOW}ref = {{ x = 1 }}\n")),
            "roles[0].allow[0].ref",
            "must be a pattern",
        ),
        (
            role("", &format!("{ALLOW}ref = \"{}\"\n", "a".repeat(1025))),
            "roles[0].allow[0].ref",
            "longer than 1024",
        ),
        (
            role("duration_seconds = 899", ALLOW),
            "roles[0].duration_seconds",
            "between 900 and 43200",
        ),
        (
            role("duration_seconds = 43201", ALLOW),
            "roles[0].duration_seconds",
            "between 900 and 43200",
        ),
        (
            role("duration_seconds = -1", ALLOW),
            "roles[0].duration_seconds",
            "between 900 and 43200",
        ),
        (
            role("duration_seconds = \"900\"", ALLOW),
            "roles[0].duration_seconds",
            "must be an integer",
        ),
        (
            role("session_tags = \"yes\"", ALLOW),
            "roles[0].session_tags",
            "must be a boolean",
        ),
        (
            role("description = 1", ALLOW),
            "roles[0].description",
            "must be a string",
        ),
        (
            format!("[[roles]]\nrole_arn = \"{ARN}\"\n{ALLOW}"),
            "roles[0].name",
            "missing required key",
        ),
        (
            format!("[[roles]]\nname = \"\"\nrole_arn = \"{ARN}\"\n{ALLOW}"),
            "roles[0].name",
            "role name must be",
        ),
        (
            format!("[[roles]]\nname = \"de ploy\"\nrole_arn = \"{ARN}\"\n{ALLOW}"),
            "roles[0].name",
            "role name must be",
        ),
        (
            format!("[[roles]]\nname = \"deploy\"\n{ALLOW}"),
            "roles[0].role_arn",
            "missing required key",
        ),
        (
            format!("{}\n{}", role("", ALLOW), role("", ALLOW)),
            "roles[1].name",
            "duplicate role name `deploy` (first defined in roles[0])",
        ),
        (String::new(), "roles", "defines no roles"),
        ("roles = []".to_owned(), "roles", "defines no roles"),
        (
            "roles = \"deploy\"".to_owned(),
            "roles",
            "must be an array of tables",
        ),
        ("roles = [1]".to_owned(), "roles[0]", "must be a table"),
        (
            format!("[[roles]]\nname = \"deploy\"\nrole_arn = \"{ARN}\"\nallow = [\"x\"]"),
            "roles[0].allow[0]",
            "a rule must be a table",
        ),
        (
            format!(
                "[[roles]]\nname = \"deploy\"\nrole_arn = \"{ARN}\"\nallow = {{ ref = \"x\" }}"
            ),
            "roles[0].allow",
            "must be an array of tables",
        ),
    ];
    for (text, key, reason) in cases {
        let message = load_error(&text);
        let expected = format!("test.toml: key `{key}`: ");
        assert!(
            message.contains(&expected) && message.contains(reason),
            "expected key `{key}` with {reason:?}, got:\n{message}\n--- text ---\n{text}"
        );
    }
}

#[test]
fn bad_role_arns() {
    let cases = [
        (
            "arn:aws:iam::123456789012:user/deploy",
            "resource must start with `role/`",
        ),
        ("arn:aws:iam::12345678901:role/deploy", "12 digits"),
        ("arn:aws:iam::1234567890123:role/deploy", "12 digits"),
        ("arn:aws:iam::12345678901x:role/deploy", "12 digits"),
        (
            "arn:aws-eu:iam::123456789012:role/deploy",
            "unknown partition `aws-eu`",
        ),
        (
            "arn:aws:s3::123456789012:role/deploy",
            "not an IAM role ARN",
        ),
        (
            "arn:aws:iam:us-east-1:123456789012:role/deploy",
            "not an IAM role ARN",
        ),
        ("arn:aws:iam::123456789012:role/", "role name must be"),
        (
            "arn:aws:iam::123456789012:role/de ploy",
            "role name must be",
        ),
        (
            "arn:aws:iam::123456789012:role/a//deploy",
            "role path must be",
        ),
        ("arn:aws:iam::123456789012", "not an ARN"),
        ("GitHubActions-Lambda-DeployRole", "not an ARN"),
        ("", "not an ARN"),
    ];
    for (arn, reason) in cases {
        let text = format!("[[roles]]\nname = \"deploy\"\nrole_arn = \"{arn}\"\n{ALLOW}");
        let message = load_error(&text);
        assert!(
            message.contains("test.toml: key `roles[0].role_arn`: ") && message.contains(reason),
            "{arn:?}: expected {reason:?}, got {message}"
        );
    }
}

#[test]
fn good_role_arns() {
    for arn in [
        "arn:aws:iam::123456789012:role/GitHubActions-ECR-PullRole",
        "arn:aws-cn:iam::123456789012:role/x",
        "arn:aws-us-gov:iam::123456789012:role/ci/deploy/Role+=,.@_-",
    ] {
        let text = format!("[[roles]]\nname = \"deploy\"\nrole_arn = \"{arn}\"\n{ALLOW}");
        let loaded = compile_ok(&text);
        assert_eq!(aws(&loaded.policy.roles()[0]).0, arn);
    }
}

#[test]
fn all_errors_are_reported_together() {
    let text = format!(
        "extra = 1\n[[roles]]\nname = \"a b\"\nrole_arn = \"nope\"\nduration_seconds = 5\n[[roles.allow]]\nref = []\n\
         [[roles]]\nname = \"ok\"\nrole_arn = \"{ARN}\"\n[[roles.allow]]\n"
    );
    let err = Policy::compile(&text, "many.toml").unwrap_err();
    let PolicyError::InvalidMany { path, issues } = &err else {
        panic!("expected InvalidMany, got {err:?}");
    };
    assert_eq!(path, "many.toml");
    let keys: Vec<&str> = issues.iter().map(|issue| issue.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "extra",
            "roles[0].name",
            "roles[0].role_arn",
            "roles[0].duration_seconds",
            "roles[0].allow[0].ref",
            "roles[1].allow[0]",
        ]
    );
    // One line per problem, each in the `FILE: key `KEY`: REASON` shape.
    let rendered = err.to_string();
    assert_eq!(rendered.lines().count(), issues.len());
    assert!(
        rendered
            .lines()
            .all(|line| line.starts_with("many.toml: key `"))
    );
}

#[test]
fn a_single_error_is_the_invalid_variant() {
    let err = Policy::compile(&role("colour = 1", ALLOW), "p.toml").unwrap_err();
    let PolicyError::Invalid { path, key, reason } = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!((path.as_str(), key.as_str()), ("p.toml", "roles[0].colour"));
    assert!(reason.starts_with("unknown role key"));
    assert_eq!(
        err.to_string(),
        format!("p.toml: key `roles[0].colour`: {reason}")
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = Policy::compile("[[roles]]\nname = \"x\nrole_arn = 1\n", "p.toml").unwrap_err();
    let PolicyError::Syntax { path, line, .. } = &err else {
        panic!("expected Syntax, got {err:?}");
    };
    assert_eq!((path.as_str(), *line), ("p.toml", 2));
    assert!(
        err.to_string().starts_with("p.toml: line 2, column "),
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn read_errors_name_the_file() {
    let err = Policy::load(std::path::Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read policy: ")
    );
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let text = role("", ALLOW);
    std::fs::write(&path, &text).unwrap();
    let loaded = Policy::load(&path).unwrap();
    assert_eq!(loaded.policy.version(), compile_ok(&text).policy.version());
}

#[test]
fn defaults_and_summary() {
    let text = role(
        "description = \"Lambda deploys\"",
        &format!("{ALLOW}[[roles.deny]]\nref = \"refs/heads/x\"\n"),
    );
    let roles = compile_ok(&text).policy.roles();
    assert_eq!(roles.len(), 1);
    let summary = &roles[0];
    assert_eq!(summary.name, "deploy");
    assert_eq!(summary.credential.kind(), "aws");
    assert_eq!(aws(summary), (ARN, 900, true));
    assert_eq!(summary.description.as_deref(), Some("Lambda deploys"));
    assert_eq!((summary.allow_rules, summary.deny_rules), (1, 1));

    let roles = compile_ok(&role(
        "duration_seconds = 43200\nsession_tags = false",
        ALLOW,
    ))
    .policy
    .roles();
    assert_eq!(aws(&roles[0]), (ARN, 43200, false));
}

/// `(role_arn, duration_seconds, session_tags)` of an AWS role's summary.
fn aws(summary: &RoleSummary) -> (&str, u32, bool) {
    match &summary.credential {
        RoleCredential::Aws {
            role_arn,
            duration_seconds,
            session_tags,
        } => (role_arn, *duration_seconds, *session_tags),
        RoleCredential::GitHub { .. } => panic!("not an AWS role: {summary:?}"),
    }
}

#[test]
fn version_is_the_sha256_of_the_text() {
    let text = role("", ALLOW);
    let version = compile_ok(&text).policy.version().to_owned();
    assert_eq!(version.len(), 64);
    assert!(
        version
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
    );
    assert_ne!(
        compile_ok(&format!("{text}\n# changed\n")).policy.version(),
        version
    );
}

fn warnings(rules: &str) -> Vec<PolicyWarning> {
    compile_ok(&role("", rules)).warnings
}

#[test]
fn warns_about_names_without_ids() {
    let found = warnings("[[roles.allow]]\nrepository = \"ourorg/*\"\nref = \"refs/heads/main\"\n");
    assert_eq!(
        found
            .iter()
            .map(|w| (w.role.as_str(), w.rule.as_deref(), w.key.as_deref()))
            .collect::<Vec<_>>(),
        [("deploy", Some("allow[0]"), Some("repository"))]
    );
    assert!(found[0].message.contains("repository_id"));

    let found = warnings("[[roles.allow]]\nrepository_owner = \"ourorg\"\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key.as_deref(), Some("repository_owner"));

    // A wildcard id pins nothing.
    let found =
        warnings("[[roles.allow]]\nrepository = \"ourorg/*\"\nrepository_owner_id = \"12*\"\n");
    assert_eq!(found.len(), 1);

    // Pinned by an id in the same rule: no warning. An id in another rule does not count.
    assert!(
        warnings("[[roles.allow]]\nrepository = \"ourorg/*\"\nrepository_owner_id = \"1234567\"\n")
            .is_empty()
    );
    assert!(
        warnings("[[roles.allow]]\nrepository = \"ourorg/app\"\nrepository_id = [\"1\", \"2\"]\n")
            .is_empty()
    );
    let found = warnings(
        "[[roles.allow]]\nrepository_owner_id = \"1234567\"\n[[roles.allow]]\nrepository = \"ourorg/app\"\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule.as_deref(), Some("allow[1]"));
}

#[test]
fn warns_about_unbound_rules() {
    let found = warnings("[[roles.allow]]\nref = \"refs/heads/main\"\n");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].rule.as_deref(), found[0].key.as_deref()),
        (Some("allow[0]"), None)
    );
    assert!(found[0].message.contains("any GitHub workflow"));
}

#[test]
fn warns_about_deny_rules_on_optional_claims() {
    let found = warnings(&format!(
        "{ALLOW}[[roles.deny]]\nenvironment = \"sandbox\"\nref = \"refs/heads/x\"\n"
    ));
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].rule.as_deref(), found[0].key.as_deref()),
        (Some("deny[0]"), Some("environment"))
    );
    assert!(
        warnings(&format!(
            "{ALLOW}[[roles.deny]]\nrunner_environment = \"self-hosted\"\n"
        ))
        .is_empty()
    );
}
