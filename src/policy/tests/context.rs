//! Context conditions: loading, which questions a request asks, and how the
//! answers decide.

use super::{claims, compile_ok, load_error};
use crate::claims::UnverifiedClaims;
use crate::context::{ContextAnswer, ContextAnswers, ContextCondition};
use crate::policy::{Denial, Policy, RoleRequest};

const POLICY: &str = include_str!("../../../tests/fixtures/policies/context.toml");
const TIGHT: &str = include_str!("../../../tests/fixtures/policies/tight.toml");

fn policy() -> Policy {
    compile_ok(POLICY).policy
}

fn scan() -> ContextCondition {
    ContextCondition::CheckPassed {
        name: "dependency-scan".into(),
        app: Some("snyk".into()),
    }
}

fn tests_check() -> ContextCondition {
    ContextCondition::CheckPassed {
        name: "unit-tests".into(),
        app: None,
    }
}

fn approvals(count: u32) -> ContextCondition {
    ContextCondition::PullRequestApprovals(count)
}

fn token(git_ref: &str) -> UnverifiedClaims {
    claims(&[
        ("repository", "ourorg/app"),
        ("repository_owner_id", "1234567"),
        ("repository_id", "42"),
        ("ref", git_ref),
        ("runner_environment", "github-hosted"),
    ])
}

fn named(role: &str) -> RoleRequest<'_> {
    RoleRequest {
        role: Some(role),
        ..RoleRequest::default()
    }
}

fn answers(pairs: &[(ContextCondition, ContextAnswer)]) -> ContextAnswers {
    let mut answers = ContextAnswers::default();
    for (condition, answer) in pairs {
        answers.insert(condition.clone(), answer.clone());
    }
    answers
}

fn pass(detail: &str) -> ContextAnswer {
    ContextAnswer::Pass(detail.into())
}

fn fail(detail: &str) -> ContextAnswer {
    ContextAnswer::Fail(detail.into())
}

fn down() -> ContextAnswer {
    ContextAnswer::Unavailable("GitHub answered 502".into())
}

#[test]
fn context_conditions_load_sorted_on_allow_rules() {
    let policy = policy();
    assert_eq!(
        policy.context_conditions(&named("deploy")),
        [approvals(2), scan(), tests_check()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        policy.context_conditions(&named("release-notes")),
        [approvals(1)]
    );
    assert!(policy.context_conditions(&named("ci-read")).is_empty());
}

#[test]
fn context_condition_errors_name_their_keys() {
    let rule = |body: &str, kind: &str| {
        format!(
            "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n\
             [[roles.allow]]\nrepository_owner_id = \"1\"\n[[roles.{kind}]]\n{body}\n"
        )
    };
    let cases: &[(String, &[&str])] = &[
        (
            rule("ref = \"x\"\nchecks_passed = [\"a\"]", "deny"),
            &["key `roles[0].deny[0].checks_passed`: context conditions are only for allow rules"],
        ),
        (
            rule("ref = \"x\"\npull_request_approvals = 1", "deny"),
            &[
                "key `roles[0].deny[0].pull_request_approvals`: context conditions are only for allow rules",
            ],
        ),
        (
            rule(
                "checks_passed = [\"a\"]\npull_request_approvals = 1",
                "allow",
            ),
            &["key `roles[0].allow[1]`: a rule needs at least one claim condition"],
        ),
        (
            rule("ref = \"x\"\nchecks_passed = []", "allow"),
            &["key `roles[0].allow[1].checks_passed`: empty list"],
        ),
        (
            rule("ref = \"x\"\nchecks_passed = \"a\"", "allow"),
            &["key `roles[0].allow[1].checks_passed`: must be a list of check names"],
        ),
        (
            rule(
                "ref = \"x\"\nchecks_passed = [\"\", 1, { app = \"snyk\" }, { name = \"a\", app = \"Snyk\" }, { name = \"b\", by = \"x\" }, \"c\", \"c\"]",
                "allow",
            ),
            &[
                "key `roles[0].allow[1].checks_passed[0]`: a check name is 1 to 256 characters",
                "key `roles[0].allow[1].checks_passed[1]`: must be a check name or",
                "key `roles[0].allow[1].checks_passed[2].name`: missing required key",
                "key `roles[0].allow[1].checks_passed[3].app`: \"Snyk\" is not a GitHub App slug",
                "key `roles[0].allow[1].checks_passed[4].by`: unknown key",
                "key `roles[0].allow[1].checks_passed[6]`: duplicate check: checks_passed `c`",
            ],
        ),
        (
            rule("ref = \"x\"\npull_request_approvals = 0", "allow"),
            &["key `roles[0].allow[1].pull_request_approvals`: must be between 1 and 50, got 0"],
        ),
        (
            rule("ref = \"x\"\npull_request_approvals = 51", "allow"),
            &["key `roles[0].allow[1].pull_request_approvals`: must be between 1 and 50, got 51"],
        ),
        (
            rule("ref = \"x\"\npull_request_approvals = \"1\"", "allow"),
            &["key `roles[0].allow[1].pull_request_approvals`: must be an integer, found string"],
        ),
    ];
    for (text, expected) in cases {
        let error = load_error(text);
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{error}");
        for (line, fragment) in lines.iter().zip(expected.iter()) {
            assert!(line.contains(fragment), "{line}\nexpected: {fragment}");
        }
    }
}

#[test]
fn only_what_the_claims_leave_open_is_asked() {
    let policy = policy();
    // Claims that fail: nothing asked, whichever role.
    let outsider = claims(&[
        ("repository_owner_id", "999"),
        ("repository_id", "42"),
        ("ref", "refs/heads/main"),
    ]);
    assert!(
        policy
            .context_needed_unverified(&outsider, &RoleRequest::default())
            .is_empty()
    );
    assert!(
        policy
            .context_needed_unverified(&outsider, &named("deploy"))
            .is_empty()
    );
    // A feature branch: only ci-read matches, without context conditions.
    assert!(
        policy
            .context_needed_unverified(&token("refs/heads/feature"), &RoleRequest::default())
            .is_empty()
    );
    // A role granted by a rule without context conditions is not asked about.
    assert!(
        policy
            .context_needed_unverified(&token("refs/heads/main"), &named("ci-read"))
            .is_empty()
    );
    // The named role: the conditions of its matching rules only.
    assert_eq!(
        policy.context_needed_unverified(&token("refs/heads/main"), &named("deploy")),
        [scan(), tests_check()]
    );
    assert_eq!(
        policy.context_needed_unverified(&token("refs/heads/hotfix/1"), &named("deploy")),
        [approvals(2)]
    );
    // No role named: every role still open, distinct and sorted.
    assert_eq!(
        policy.context_needed_unverified(&token("refs/heads/main"), &RoleRequest::default()),
        [scan(), tests_check(), approvals(1)]
    );
    // A role a deny rule refuses is not asked about.
    let mut self_hosted = token("refs/heads/main");
    self_hosted.insert("runner_environment", "self-hosted");
    assert_eq!(
        policy.context_needed_unverified(&self_hosted, &RoleRequest::default()),
        [approvals(1)]
    );
    assert!(
        policy
            .context_needed_unverified(&self_hosted, &named("deploy"))
            .is_empty()
    );
    // A policy without context conditions asks nothing.
    let tight = compile_ok(TIGHT).policy;
    let mut main_push = token("refs/heads/main");
    main_push.insert("repository", "ourorg/app");
    main_push.insert("event_name", "push");
    assert!(
        tight
            .evaluate_unverified(&main_push, &named("deploy"))
            .is_ok()
    );
    assert!(
        tight
            .context_needed_unverified(&main_push, &RoleRequest::default())
            .is_empty()
    );
    assert!(
        tight
            .context_needed_unverified(&main_push, &named("deploy"))
            .is_empty()
    );
}

#[test]
fn a_rule_grants_only_when_every_answer_passes() {
    let policy = policy();
    let main = token("refs/heads/main");
    let decide = |answers: &ContextAnswers| {
        policy.evaluate_unverified_in_context(&main, &named("deploy"), answers)
    };
    let granted = decide(&answers(&[
        (scan(), pass("completed/success by snyk")),
        (tests_check(), pass("completed/success by github-actions")),
    ]))
    .unwrap();
    assert_eq!(granted.matched_rule(), "deploy.allow[0]");

    // A fail: refused, and the audit names the condition and what was seen.
    assert_eq!(
        decide(&answers(&[
            (scan(), pass("completed/success by snyk")),
            (tests_check(), fail("completed/failure by github-actions")),
        ])),
        Err(Denial::NotPermitted {
            role: Some("deploy".into()),
            first_failed: "deploy.allow[0].checks_passed `unit-tests`: fail (completed/failure by github-actions)".into(),
        })
    );
    // Missing answers (offline, nobody asked): not matched.
    assert_eq!(
        decide(&ContextAnswers::default()),
        Err(Denial::NotPermitted {
            role: Some("deploy".into()),
            first_failed:
                "deploy.allow[0].checks_passed `dependency-scan` by app `snyk`: not answered".into(),
        })
    );
    // Unavailable, and nothing failed: the request cannot be decided.
    let unavailable = decide(&answers(&[
        (scan(), down()),
        (tests_check(), pass("completed/success by github-actions")),
    ]))
    .unwrap_err();
    assert_eq!(
        unavailable,
        Denial::ContextUnavailable {
            role: Some("deploy".into()),
            detail: "deploy.allow[0].checks_passed `dependency-scan` by app `snyk`: unavailable (GitHub answered 502)".into(),
        }
    );
    assert_eq!(unavailable.reason_code(), "context_unavailable");
    // Unavailable next to a fail: the rule cannot grant whatever GitHub says.
    assert!(matches!(
        decide(&answers(&[
            (scan(), down()),
            (tests_check(), fail("in_progress/none by x"))
        ])),
        Err(Denial::NotPermitted { .. })
    ));
}

#[test]
fn any_rule_may_grant_and_deny_rules_come_first() {
    let policy = policy();
    let hotfix = token("refs/heads/hotfix/1");
    assert_eq!(
        policy
            .evaluate_unverified_in_context(
                &hotfix,
                &named("deploy"),
                &answers(&[(approvals(2), pass("2 approvals of pull request 9"))]),
            )
            .unwrap()
            .matched_rule(),
        "deploy.allow[1]"
    );
    assert!(matches!(
        policy.evaluate_unverified_in_context(
            &hotfix,
            &named("deploy"),
            &answers(&[(approvals(2), fail("1 approvals of pull request 9"))]),
        ),
        Err(Denial::NotPermitted { .. })
    ));
    // Every answer passes, but a deny rule matches: refused.
    let mut self_hosted = token("refs/heads/main");
    self_hosted.insert("runner_environment", "self-hosted");
    assert_eq!(
        policy.evaluate_unverified_in_context(
            &self_hosted,
            &named("deploy"),
            &answers(&[(scan(), pass("ok")), (tests_check(), pass("ok"))]),
        ),
        Err(Denial::DeniedByRule {
            role: "deploy".into(),
            rule: "deploy.deny[0]".into()
        })
    );
    // … even when GitHub is down: never a 503 for a request refused anyway.
    assert!(matches!(
        policy.evaluate_unverified_in_context(
            &self_hosted,
            &named("deploy"),
            &answers(&[(scan(), down()), (tests_check(), down())]),
        ),
        Err(Denial::DeniedByRule { .. })
    ));
}

#[test]
fn without_a_role_named_an_unavailable_role_makes_the_request_unavailable() {
    let policy = policy();
    let main = token("refs/heads/main");
    let any = RoleRequest::default();
    // ci-read grants on claims alone, release-notes cannot be decided: it
    // might grant too, so granting ci-read could hide an ambiguity.
    let denial = policy
        .evaluate_unverified_in_context(
            &main,
            &any,
            &answers(&[
                (approvals(1), down()),
                (scan(), fail("no check run named \"dependency-scan\"")),
                (tests_check(), pass("ok")),
            ]),
        )
        .unwrap_err();
    assert_eq!(
        denial,
        Denial::ContextUnavailable {
            role: None,
            detail: "release-notes.allow[0].pull_request_approvals >= 1: unavailable (GitHub answered 502)".into(),
        }
    );
    // Already ambiguous: that is the answer, whatever GitHub would say.
    assert_eq!(
        policy.evaluate_unverified_in_context(
            &main,
            &any,
            &answers(&[
                (approvals(1), down()),
                (scan(), pass("ok")),
                (tests_check(), pass("ok")),
            ]),
        ),
        Err(Denial::Ambiguous {
            roles: vec!["deploy".into(), "ci-read".into()]
        })
    );
    // Every other role refused: the one that grants on claims alone.
    assert_eq!(
        policy
            .evaluate_unverified_in_context(
                &main,
                &any,
                &answers(&[
                    (approvals(1), fail("0 approvals of pull request 3")),
                    (scan(), fail("x")),
                    (tests_check(), pass("ok")),
                ]),
            )
            .unwrap()
            .role_name(),
        "ci-read"
    );
    // The named role alone decides: another role's unavailability is not asked.
    assert!(
        policy
            .evaluate_unverified_in_context(
                &main,
                &named("ci-read"),
                &answers(&[(approvals(1), down())])
            )
            .is_ok()
    );
}

#[test]
fn explain_shows_each_context_condition_and_its_answer() {
    let policy = policy();
    let main = token("refs/heads/main");
    let text = policy.explain(&main, &named("deploy")).to_string();
    assert!(
        text.contains("?    checks_passed `unit-tests`: not evaluated (give --context FILE)"),
        "{text}"
    );
    assert!(
        text.contains("outcome: deny (policy_not_permitted)"),
        "{text}"
    );
    let answered = answers(&[
        (scan(), pass("completed/success by snyk")),
        (tests_check(), down()),
    ]);
    let explanation = policy.explain_in_context(&main, &named("deploy"), Some(&answered));
    let text = explanation.to_string();
    assert!(
        text.contains(
            "ok   checks_passed `dependency-scan` by app `snyk`: pass (completed/success by snyk)"
        ),
        "{text}"
    );
    assert!(
        text.contains("N/A  checks_passed `unit-tests`: unavailable (GitHub answered 502)"),
        "{text}"
    );
    assert!(text.contains("role deploy: undecided: allow[0]"), "{text}");
    assert_eq!(
        explanation.outcome,
        policy.evaluate_unverified_in_context(&main, &named("deploy"), &answered)
    );
}
