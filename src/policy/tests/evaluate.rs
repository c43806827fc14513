//! Evaluation: matching semantics, role selection, durations, audit text, explain.

use super::{claims, compile_ok};
use crate::claims::UnverifiedClaims;
use crate::policy::{Allowed, AllowedCredential, Denial, Policy, RoleOutcome, RoleRequest};

/// Two roles over the same org: `ci` for any branch, `deploy` for main pushes
/// from hosted runners, with deny rules on a blocked actor and self-hosted runners.
const POLICY: &str = include_str!("../../../tests/fixtures/policies/evaluate.toml");

fn compiled() -> Policy {
    compile_ok(POLICY).policy
}

/// A push to main of ourorg/app from a hosted runner.
fn main_push() -> UnverifiedClaims {
    claims(&[
        ("repository_owner_id", "1234567"),
        ("repository", "ourorg/app"),
        ("ref", "refs/heads/main"),
        ("event_name", "push"),
        ("ref_protected", "true"),
        ("runner_environment", "github-hosted"),
        ("actor", "alice"),
    ])
}

fn with(mut set: UnverifiedClaims, name: &str, value: &str) -> UnverifiedClaims {
    set.insert(name, value);
    set
}

fn without(set: &UnverifiedClaims, name: &str) -> UnverifiedClaims {
    let mut out = UnverifiedClaims::default();
    for (key, value) in set.iter().filter(|(key, _)| *key != name) {
        out.insert(key, value);
    }
    out
}

fn named(role: &str) -> RoleRequest<'_> {
    RoleRequest {
        role: Some(role),
        duration_seconds: None,
        permissions: None,
    }
}

/// The denial of `role` to `claims` (a denial is expected).
fn denied(policy: &Policy, claims: &UnverifiedClaims, role: &str) -> Denial {
    policy
        .evaluate_unverified(claims, &named(role))
        .unwrap_err()
}

/// `(role_arn, duration_seconds, session_tags)` of an AWS grant.
fn aws(grant: &Allowed) -> (&str, u32, bool) {
    match grant.credential() {
        AllowedCredential::Aws {
            role_arn,
            duration_seconds,
            session_tags,
        } => (role_arn, *duration_seconds, *session_tags),
        AllowedCredential::GitHub { .. } => panic!("an AWS role granted a GitHub token"),
    }
}

fn grant(result: Result<Allowed, Denial>) -> Allowed {
    match result {
        Ok(grant) => grant,
        Err(denial) => panic!("expected a grant, got {denial:?}"),
    }
}

#[test]
fn named_role_is_granted_with_its_settings() {
    let grant = grant(compiled().evaluate_unverified(&main_push(), &named("deploy")));
    assert_eq!(grant.role_name(), "deploy");
    assert_eq!(
        aws(&grant),
        (
            "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole",
            3600,
            false
        )
    );
    assert_eq!(grant.matched_rule(), "deploy.allow[0]");
}

#[test]
fn role_selection() {
    let policy = compiled();
    let feature = with(main_push(), "ref", "refs/heads/feature");
    let outsider = with(main_push(), "repository_owner_id", "999");

    // Exactly one role matches: chosen without being named.
    let chosen = grant(policy.evaluate_unverified(&feature, &RoleRequest::default()));
    assert_eq!(
        (chosen.role_name(), chosen.matched_rule()),
        ("ci", "ci.allow[0]")
    );
    assert!(aws(&chosen).2);

    // Both match: the caller must name one.
    assert_eq!(
        policy.evaluate_unverified(&main_push(), &RoleRequest::default()),
        Err(Denial::Ambiguous {
            roles: vec!["ci".into(), "deploy".into()]
        })
    );
    assert_eq!(
        grant(policy.evaluate_unverified(&main_push(), &named("ci"))).role_name(),
        "ci"
    );

    // None match.
    let denial = policy
        .evaluate_unverified(&outsider, &RoleRequest::default())
        .unwrap_err();
    assert!(
        matches!(denial, Denial::NotPermitted { role: None, .. }),
        "{denial:?}"
    );

    // Named but unknown; unknown even when the token would match nothing else.
    assert_eq!(
        policy.evaluate_unverified(&main_push(), &named("admin")),
        Err(Denial::UnknownRole)
    );
    assert_eq!(
        policy.evaluate_unverified(&outsider, &named("Deploy")),
        Err(Denial::UnknownRole)
    );

    // Named and known, but its rules do not match.
    let denial = denied(&policy, &feature, "deploy");
    assert_eq!(
        denial,
        Denial::NotPermitted {
            role: Some("deploy".into()),
            first_failed: r#"deploy.allow[0].ref: "refs/heads/feature" does not match any of ["refs/heads/main", "refs/heads/release/*"]"#.into(),
        }
    );
    assert_eq!(denial.reason_code(), "policy_not_permitted");
}

#[test]
fn deny_wins_over_allow() {
    let policy = compiled();
    let self_hosted = with(main_push(), "runner_environment", "self-hosted");
    let denial = denied(&policy, &self_hosted, "deploy");
    assert_eq!(
        denial,
        Denial::DeniedByRule {
            role: "deploy".into(),
            rule: "deploy.deny[0]".into()
        }
    );
    assert_eq!(denial.reason_code(), "policy_deny_rule");
    // Deny rules use the claim's case rules too: `actor` is case-insensitive.
    let mallory = with(main_push(), "actor", "Mallory");
    assert_eq!(
        policy.evaluate_unverified(&mallory, &named("deploy")),
        Err(Denial::DeniedByRule {
            role: "deploy".into(),
            rule: "deploy.deny[1]".into()
        })
    );
    // Unnamed: the denied role does not count, so `ci` is the single match.
    assert_eq!(
        grant(policy.evaluate_unverified(&self_hosted, &RoleRequest::default())).role_name(),
        "ci"
    );
}

#[test]
fn absent_claims_never_match() {
    let policy = compiled();
    // In an allow rule: the condition fails.
    let no_ref = without(&main_push(), "ref");
    assert_eq!(
        policy.evaluate_unverified(&no_ref, &named("deploy")),
        Err(Denial::NotPermitted {
            role: Some("deploy".into()),
            first_failed: "deploy.allow[0].ref: claim absent".into()
        })
    );
    // In a deny rule: absent means the deny rule does not apply.
    let no_runner = without(&main_push(), "runner_environment");
    assert_eq!(
        grant(policy.evaluate_unverified(&no_runner, &named("deploy"))).role_name(),
        "deploy"
    );
    // Even a `**` pattern does not match an absent claim.
    let anything = compile_ok(
        "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
         [[roles.allow]]\nrepository_owner_id = \"1\"\nenvironment = \"**\"\n",
    )
    .policy;
    assert!(
        anything
            .evaluate_unverified(&claims(&[("repository_owner_id", "1")]), &named("r"))
            .is_err()
    );
    assert!(
        anything
            .evaluate_unverified(
                &claims(&[("repository_owner_id", "1"), ("environment", "")]),
                &named("r")
            )
            .is_ok()
    );
}

#[test]
fn case_rules_per_claim() {
    let policy = compiled();
    // `repository = "OurOrg/*"` in ci matches the lowercase claim and vice versa.
    for repository in ["ourorg/app", "OURORG/App"] {
        let set = with(main_push(), "repository", repository);
        assert!(
            policy.evaluate_unverified(&set, &named("ci")).is_ok(),
            "{repository}"
        );
    }
    // `ref` compares exactly.
    let shouting = with(main_push(), "ref", "refs/heads/Main");
    assert!(
        policy
            .evaluate_unverified(&shouting, &named("deploy"))
            .is_err()
    );
    let text = "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
                [[roles.allow]]\nrepository_owner_id = \"1\"\nref = \"refs/heads/Main\"\n";
    let exact = compile_ok(text).policy;
    let set = claims(&[("repository_owner_id", "1"), ("ref", "refs/heads/main")]);
    assert!(exact.evaluate_unverified(&set, &named("r")).is_err());
}

#[test]
fn booleans_and_integers_compare_as_strings() {
    let policy = compiled();
    // `ref_protected = true` and `repository_owner_id = 1234567` (unquoted) in deploy.
    assert!(
        policy
            .evaluate_unverified(&main_push(), &named("deploy"))
            .is_ok()
    );
    let unprotected = with(main_push(), "ref_protected", "false");
    assert!(
        policy
            .evaluate_unverified(&unprotected, &named("deploy"))
            .is_err()
    );
    // A claim set built from JSON booleans and numbers gives the same strings.
    let json = serde_json::json!({
        "repository_owner_id": 1234567, "repository": "ourorg/app", "ref": "refs/heads/main",
        "event_name": "push", "ref_protected": true, "runner_environment": "github-hosted"
    });
    let set = UnverifiedClaims::from_json_object(json.as_object().unwrap());
    assert!(policy.evaluate_unverified(&set, &named("deploy")).is_ok());
}

#[test]
fn durations() {
    let policy = compiled();
    let request = |role, duration_seconds| RoleRequest {
        role: Some(role),
        duration_seconds,
        permissions: None,
    };
    // (role, requested, expected duration or None for out of range)
    let cases: &[(&str, Option<u64>, Option<u32>)] = &[
        ("deploy", None, Some(3600)),
        ("deploy", Some(900), Some(900)),
        ("deploy", Some(1800), Some(1800)),
        ("deploy", Some(3600), Some(3600)),
        ("deploy", Some(899), None),
        ("deploy", Some(3601), None),
        ("deploy", Some(0), None),
        ("deploy", Some(u64::MAX), None),
        ("ci", None, Some(900)),
        ("ci", Some(900), Some(900)),
        ("ci", Some(901), None),
    ];
    for (role, requested, expected) in cases {
        let result = policy.evaluate_unverified(&main_push(), &request(role, *requested));
        match (expected, result) {
            (Some(seconds), Ok(grant)) => assert_eq!(aws(&grant).1, *seconds),
            (
                None,
                Err(Denial::DurationOutOfRange {
                    role: denied,
                    requested: asked,
                    max,
                }),
            ) => {
                assert_eq!((denied.as_str(), Some(asked)), (*role, *requested));
                assert_eq!(max, if *role == "deploy" { 3600 } else { 900 });
            }
            (expected, result) => {
                panic!("{role} {requested:?}: expected {expected:?}, got {result:?}")
            }
        }
    }
}

#[test]
fn duration_is_checked_only_after_a_grant() {
    let policy = compiled();
    let outsider = with(main_push(), "repository_owner_id", "999");
    let request = RoleRequest {
        role: Some("deploy"),
        duration_seconds: Some(1),
        permissions: None,
    };
    assert!(matches!(
        policy.evaluate_unverified(&outsider, &request),
        Err(Denial::NotPermitted { .. })
    ));
    let self_hosted = with(main_push(), "runner_environment", "self-hosted");
    assert!(matches!(
        policy.evaluate_unverified(&self_hosted, &request),
        Err(Denial::DeniedByRule { .. })
    ));
}

#[test]
fn first_failed_reports_the_closest_miss() {
    let policy = compiled();
    // Unnamed, nothing matches: ci.allow[0] fails one condition of two,
    // deploy.allow[0] fails one of five; the rule with more matches wins.
    let outsider = with(main_push(), "repository_owner_id", "999");
    assert_eq!(
        policy.evaluate_unverified(&outsider, &RoleRequest::default()),
        Err(Denial::NotPermitted {
            role: None,
            first_failed:
                r#"deploy.allow[0].repository_owner_id: "999" does not match any of ["1234567"]"#
                    .into()
        })
    );
    // A role refused only by a deny rule is the closest miss of all.
    let text = "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
                [[roles.allow]]\nrepository_owner_id = \"1\"\n\
                [[roles.deny]]\nref = \"refs/heads/x\"\n";
    let denied = compile_ok(text).policy;
    let set = claims(&[("repository_owner_id", "1"), ("ref", "refs/heads/x")]);
    assert_eq!(
        denied.evaluate_unverified(&set, &RoleRequest::default()),
        Err(Denial::NotPermitted {
            role: None,
            first_failed: "r.allow[0] matched, but so did r.deny[0]".into()
        })
    );
}

#[test]
fn first_failed_is_one_bounded_line() {
    let patterns: Vec<String> = (0..20).map(|n| format!("\"refs/heads/b{n}\"")).collect();
    let text = format!(
        "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
         [[roles.allow]]\nrepository_owner_id = \"1\"\nref = [{}]\n",
        patterns.join(", ")
    );
    let long = compile_ok(&text).policy;
    let value = format!("refs/heads/{}\nforged audit line", "x".repeat(5000));
    let set = claims(&[("repository_owner_id", "1"), ("ref", &value)]);
    let Err(Denial::NotPermitted { first_failed, .. }) =
        long.evaluate_unverified(&set, &named("r"))
    else {
        panic!("expected NotPermitted");
    };
    assert_eq!(first_failed.lines().count(), 1, "{first_failed}");
    assert!(
        first_failed.chars().count() <= 1024,
        "{}",
        first_failed.len()
    );
    assert!(first_failed.contains("xxx…\""), "{first_failed}");
    assert!(first_failed.ends_with(", … 12 more]"), "{first_failed}");

    // Patterns long enough that the whole line needs cutting.
    let patterns: Vec<String> = (0..8)
        .map(|n| format!("\"{n}{}\"", "p".repeat(300)))
        .collect();
    let text = format!(
        "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
         [[roles.allow]]\nrepository_owner_id = \"1\"\nref = [{}]\n",
        patterns.join(", ")
    );
    let wide = compile_ok(&text).policy;
    let set = claims(&[("repository_owner_id", "1"), ("ref", "x")]);
    let Err(Denial::NotPermitted { first_failed, .. }) =
        wide.evaluate_unverified(&set, &named("r"))
    else {
        panic!("expected NotPermitted");
    };
    assert_eq!(first_failed.chars().count(), 1024, "{first_failed}");
    assert!(first_failed.ends_with('…'), "{first_failed}");
}

#[test]
fn explain_traces_everything_and_agrees_with_evaluate() {
    let policy = compiled();
    let cases = [
        (main_push(), RoleRequest::default()),
        (main_push(), named("deploy")),
        (
            with(main_push(), "runner_environment", "self-hosted"),
            named("deploy"),
        ),
        (
            with(main_push(), "ref", "refs/heads/x"),
            RoleRequest::default(),
        ),
        (
            with(main_push(), "repository_owner_id", "9"),
            RoleRequest::default(),
        ),
        (main_push(), named("nope")),
    ];
    for (set, request) in &cases {
        let explanation = policy.explain(set, request);
        assert_eq!(
            explanation.outcome,
            policy.evaluate_unverified(set, request)
        );
        // The request path decides the same claims, verified, the same way.
        let verified = crate::verify::VerifiedClaims::for_tests(
            set.claim_set().clone(),
            "https://issuer.test",
            "jti",
            0,
        );
        assert_eq!(policy.evaluate(&verified, request), explanation.outcome);
        let expected_roles = match request.role {
            Some("nope") => 0,
            Some(_) => 1,
            None => 2,
        };
        assert_eq!(explanation.roles.len(), expected_roles);
    }

    let set = with(main_push(), "runner_environment", "self-hosted");
    let explanation = policy.explain(&set, &RoleRequest::default());
    let deploy = &explanation.roles[1];
    assert_eq!(deploy.role, "deploy");
    assert_eq!(deploy.outcome, RoleOutcome::Denied { allow: 0, deny: 0 });
    assert_eq!(deploy.allow[0].rule, "deploy.allow[0]");
    assert!(deploy.allow[0].matched());
    assert!(deploy.deny[0].matched());
    assert!(!deploy.deny[1].matched());
    let actor = &deploy.deny[1].conditions[0];
    assert_eq!(
        (
            actor.claim.as_str(),
            actor.value.as_deref(),
            actor.case_insensitive
        ),
        ("actor", Some("alice"), true)
    );
    let reference = deploy.allow[0]
        .conditions
        .iter()
        .find(|c| c.claim == "ref")
        .unwrap();
    assert_eq!(reference.matched_pattern, Some(0));
    assert_eq!(
        reference.patterns,
        ["refs/heads/main", "refs/heads/release/*"]
    );

    let rendered = explanation.to_string();
    for line in [
        "role deploy: allow[0] matched, refused by deny[0]",
        "FAIL actor = \"alice\" against [\"mallory\"]",
    ] {
        assert!(rendered.contains(line), "{line}:\n{rendered}");
    }
    assert!(
        rendered.ends_with("outcome: grant role ci via ci.allow[0] for 900 s"),
        "{rendered}"
    );
}
