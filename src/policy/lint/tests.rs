//! Tests of `policy check`: each finding, the exact reachability reasoning, the
//! read-only heuristic, and the example policy.

use super::{Finding, LintOptions, Severity, lint, looks_read_only};
use crate::policy::{Policy, RoleRequest};

fn findings(text: &str) -> Vec<Finding> {
    findings_with(text, &LintOptions::default())
}

fn findings_with(text: &str, options: &LintOptions) -> Vec<Finding> {
    let policy = Policy::compile(text, "test.toml").unwrap().policy;
    let found = lint(&policy, options);
    // Every witness is granted by the role it is reported on.
    for finding in &found {
        if let Some(witness) = &finding.witness {
            let request = RoleRequest {
                role: Some(&finding.role),
                duration_seconds: None,
                permissions: None,
            };
            let answers = witness.answers(&policy.context_conditions(&request));
            assert!(
                policy
                    .evaluate_unverified_in_context(&witness.to_claim_set(), &request, &answers)
                    .is_ok(),
                "{finding:?}"
            );
        }
    }
    found
}

/// `(code, role, rule, key)` of every finding.
fn summary(found: &[Finding]) -> Vec<(&str, &str, Option<&str>, Option<&str>)> {
    found
        .iter()
        .map(|f| (f.code, f.role.as_str(), f.rule.as_deref(), f.key.as_deref()))
        .collect()
}

fn codes(found: &[Finding]) -> Vec<&str> {
    found.iter().map(|finding| finding.code).collect()
}

const CLEAN: &str = include_str!("../../../tests/fixtures/policies/tight.toml");

#[test]
fn a_tight_policy_has_no_findings() {
    assert_eq!(findings(CLEAN), Vec::new());
}

#[test]
fn textual_findings_name_role_rule_and_key() {
    let text = include_str!("../../../tests/fixtures/policies/lint_textual.toml");
    let found = findings(text);
    assert_eq!(
        summary(&found),
        vec![
            ("long-duration", "deploy", None, Some("duration_seconds")),
            (
                "name-without-id",
                "deploy",
                Some("allow[0]"),
                Some("repository")
            ),
            ("no-ref-constraint", "deploy", Some("allow[0]"), None),
            (
                "wildcard-owner",
                "deploy",
                Some("allow[1]"),
                Some("repository")
            ),
            (
                "wildcard-owner",
                "deploy",
                Some("allow[1]"),
                Some("repository")
            ),
            (
                "wildcard-owner",
                "deploy",
                Some("allow[1]"),
                Some("repository")
            ),
            ("unbound-rule", "deploy", Some("allow[2]"), None),
            ("no-ref-constraint", "deploy", Some("allow[2]"), None),
            (
                "deny-on-optional-claim",
                "deploy",
                Some("deny[0]"),
                Some("environment")
            ),
            // The deny rule needs `environment = "sandbox"` as well, so a
            // self-hosted runner without that environment still gets through.
            (
                "write-role-reachable",
                "deploy",
                Some("allow[0]"),
                Some("runner_environment")
            ),
        ],
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .all(|finding| finding.severity == Severity::Warning)
    );
    assert!(found[0].message.contains("7200"));
}

#[test]
fn wildcard_ids_do_not_pin() {
    let text = CLEAN
        .replace("repository_id = \"42\"", "repository_id = \"4*\"")
        .replace(
            "repository_owner_id = \"1234567\"",
            "repository_owner_id = \"*\"",
        );
    assert_eq!(codes(&findings(&text)), vec!["name-without-id"]);
}

/// A write role whose single allow rule is `extra` plus the org binding.
fn write_role(extra: &str, deny: &str) -> String {
    format!(
        r#"
[[roles]]
name = "deploy"
role_arn = "arn:aws:iam::123456789012:role/GitHubActions-Deploy"

[[roles.allow]]
repository_owner_id = "1234567"
ref = "refs/heads/main"
{extra}
{deny}
"#
    )
}

fn reachable_from(text: &str) -> Vec<String> {
    findings(text)
        .into_iter()
        .filter(|finding| finding.code == "write-role-reachable")
        .map(|finding| {
            let witness = finding.witness.unwrap();
            let key = finding.key.unwrap();
            let value = witness.claims[&key].clone().unwrap();
            format!("{key}={value}")
        })
        .collect()
}

#[test]
fn reachability_is_decided_on_the_language_not_the_text() {
    let all = vec![
        "event_name=pull_request",
        "event_name=pull_request_target",
        "runner_environment=self-hosted",
    ];
    // No constraint at all: every untrusted context reaches the role.
    assert_eq!(reachable_from(&write_role("", "")), all);
    // Pushes only: no pull request event, but a self-hosted runner still can.
    assert_eq!(
        reachable_from(&write_role("event_name = \"push\"", "")),
        vec!["runner_environment=self-hosted"]
    );
    // A glob that happens to cover the pull request events.
    assert_eq!(
        reachable_from(&write_role("event_name = \"pull_*\"", "")),
        vec![
            "event_name=pull_request",
            "event_name=pull_request_target",
            "runner_environment=self-hosted"
        ]
    );
    // A deny rule written as a glob blocks both events; self-hosted denied too.
    assert_eq!(
        reachable_from(&write_role(
            "",
            "[[roles.deny]]\nevent_name = \"pull_request*\"\n[[roles.deny]]\nrunner_environment = \"self-hosted\""
        )),
        Vec::<String>::new()
    );
    // A deny rule that blocks only some pull request tokens does not make the role safe.
    assert_eq!(
        reachable_from(&write_role(
            "event_name = [\"push\", \"pull_request\"]",
            "[[roles.deny]]\nevent_name = \"pull_request\"\nactor = \"dependabot[bot]\"\n\
             [[roles.deny]]\nrunner_environment = \"self-hosted\""
        )),
        vec!["event_name=pull_request"]
    );
}

#[test]
fn read_only_roles_are_not_checked_for_reachability() {
    let text = write_role("", "")
        .replace("GitHubActions-Deploy", "GitHubActions-ECR-PullRole")
        .replace("name = \"deploy\"", "name = \"ci\"");
    assert!(reachable_from(&text).is_empty());
    // The explicit list replaces the guess, in both directions.
    let options = LintOptions {
        read_only_roles: Some(vec![]),
        ..LintOptions::default()
    };
    let policy = Policy::compile(&text, "t").unwrap().policy;
    assert_eq!(
        lint(&policy, &options)
            .iter()
            .filter(|finding| finding.code == "write-role-reachable")
            .count(),
        3
    );
    let options = LintOptions {
        read_only_roles: Some(vec!["deploy".into()]),
        ..LintOptions::default()
    };
    assert!(
        findings_with(&write_role("", ""), &options)
            .iter()
            .all(|finding| finding.code != "write-role-reachable")
    );
}

#[test]
fn read_only_heuristic() {
    let arn = |name: &str| format!("arn:aws:iam::123456789012:role/{name}");
    // (role name, role ARN, looks read-only)
    let cases = [
        ("ci-read", arn("GitHubActions-CI"), true),
        ("ci", arn("GitHubActions-ECR-PullRole"), true),
        ("ci", arn("S3ReadOnly"), true),
        ("tf", arn("terraform-plan"), true),
        ("ReadOnlyAccess", arn("x"), true),
        ("deploy", arn("GitHubActions-Lambda-DeployRole"), false),
        ("ci", arn("S3ReadWrite"), false),
        ("thread", arn("planner"), false),
        ("ecr", arn("ECR-PullAndPush"), false),
        ("read", arn("AdminRole"), false),
    ];
    for (name, arn, read_only) in &cases {
        assert_eq!(looks_read_only(name, arn), *read_only, "{name} {arn}");
    }
}

#[test]
fn ambiguous_roles_come_with_a_witness_both_grant() {
    let text = format!(
        "{CLEAN}\n[[roles]]\nname = \"read\"\nrole_arn = \"arn:aws:iam::123456789012:role/ReadOnly\"\n\n\
         [[roles.allow]]\nrepository_owner_id = \"1234567\"\nrepository_id = \"42\"\nref = \"refs/heads/*\"\n"
    );
    let found = findings(&text);
    let ambiguous: Vec<&Finding> = found
        .iter()
        .filter(|finding| finding.code == "ambiguous-roles")
        .collect();
    assert_eq!(ambiguous.len(), 1, "{found:#?}");
    let witness = ambiguous[0].witness.as_ref().unwrap();
    let policy = Policy::compile(&text, "t").unwrap().policy;
    for role in ["deploy", "read"] {
        let request = RoleRequest {
            role: Some(role),
            duration_seconds: None,
            permissions: None,
        };
        assert!(
            policy
                .evaluate_unverified(&witness.to_claim_set(), &request)
                .is_ok()
        );
    }
    // Disjoint refs: no ambiguity.
    let disjoint = text.replace("ref = \"refs/heads/*\"", "ref = \"refs/tags/*\"");
    assert!(!codes(&findings(&disjoint)).contains(&"ambiguous-roles"));
}

#[test]
fn an_analysis_over_budget_is_an_error() {
    let options = LintOptions {
        read_only_roles: None,
        budget: 0,
    };
    let found = findings_with(CLEAN, &options);
    assert!(
        found
            .iter()
            .any(|finding| finding.code == "undecided" && finding.severity == Severity::Error),
        "{found:#?}"
    );
}

#[test]
fn the_example_policy_findings_are_the_known_ones() {
    let found = findings(include_str!("../../../config/policy.toml"));
    let mut seen: Vec<(&str, &str)> = found
        .iter()
        .map(|finding| (finding.code, finding.role.as_str()))
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        vec![
            ("no-ref-constraint", "ci-read"),
            ("ambiguous-roles", "ci-read"),
        ],
        "{found:#?}"
    );
}

#[test]
fn context_conditions_draw_their_warnings() {
    let found = findings(include_str!(
        "../../../tests/fixtures/policies/context.toml"
    ));
    let own: Vec<_> = summary(&found)
        .into_iter()
        .filter(|(code, ..)| {
            [
                "check-without-app",
                "github-write-without-context",
                "undecided",
            ]
            .contains(code)
        })
        .collect();
    // `dependency-scan` is bound to snyk; `unit-tests` is not. The GitHub
    // role writes, but only behind an approval.
    assert_eq!(
        own,
        vec![(
            "check-without-app",
            "deploy",
            Some("allow[0]"),
            Some("checks_passed")
        )],
        "{found:#?}"
    );
    assert!(found[0].message.contains("`unit-tests`"), "{found:#?}");
    // The exact analyses still decide, with witnesses that carry commit facts.
    let reachable = found
        .iter()
        .find(|finding| finding.code == "write-role-reachable" && finding.role == "deploy")
        .unwrap();
    assert!(
        reachable
            .witness
            .as_ref()
            .unwrap()
            .one_line()
            .contains("; commit: "),
        "{reachable:?}"
    );

    let found = findings(include_str!("../../../tests/fixtures/policies/github.toml"));
    let writes: Vec<_> = summary(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "github-write-without-context")
        .collect();
    assert_eq!(
        writes,
        vec![
            (
                "github-write-without-context",
                "release-notes",
                None,
                Some("permissions")
            ),
            (
                "github-write-without-context",
                "docs-sync",
                None,
                Some("permissions")
            ),
        ]
    );
    // A GitHub role that only reads draws neither finding nor reachability.
    let read_only = "[[roles]]\nname = \"notes\"\nkind = \"github\"\n\
                     permissions = { contents = \"read\" }\n[[roles.allow]]\n\
                     repository_owner_id = \"1234567\"\nrepository_id = \"42\"\n\
                     ref = \"refs/heads/main\"\n";
    assert_eq!(codes(&findings(read_only)), Vec::<&str>::new());
}
