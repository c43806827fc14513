//! The example policy shipped in `config/policy.toml` loads cleanly and means what its comments say.

use super::{claims, compile_ok};
use crate::claims::UnverifiedClaims;
use crate::policy::{Denial, RoleRequest};

const EXAMPLE: &str = include_str!("../../../config/policy.toml");

fn token(reference: &str, event: &str, runner: &str) -> UnverifiedClaims {
    claims(&[
        ("repository_owner_id", "1234567"),
        ("repository_owner", "ourorg"),
        ("repository", "ourorg/service"),
        ("repository_id", "42"),
        ("ref", reference),
        ("event_name", event),
        ("runner_environment", runner),
    ])
}

fn role_for(set: &UnverifiedClaims, role: Option<&str>) -> Result<String, Denial> {
    let loaded = compile_ok(EXAMPLE);
    let request = RoleRequest {
        role,
        duration_seconds: None,
        permissions: None,
    };
    loaded
        .policy
        .evaluate_unverified(set, &request)
        .map(|grant| grant.role_name().to_owned())
}

#[test]
fn example_loads_without_warnings() {
    let loaded = compile_ok(EXAMPLE);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let names: Vec<String> = loaded
        .policy
        .roles()
        .into_iter()
        .map(|role| role.name)
        .collect();
    assert_eq!(names, ["ci-read", "deploy", "release"]);
}

#[test]
fn example_tiers() {
    let push_master = token("refs/heads/master", "push", "github-hosted");
    // A deploy-branch push matches ci-read and deploy: callers name the role.
    assert_eq!(
        role_for(&push_master, None),
        Err(Denial::Ambiguous {
            roles: vec!["ci-read".into(), "deploy".into()]
        })
    );
    assert_eq!(
        role_for(&push_master, Some("deploy")).as_deref(),
        Ok("deploy")
    );
    assert_eq!(
        role_for(&push_master, Some("ci-read")).as_deref(),
        Ok("ci-read")
    );
    for branch in ["refs/heads/pre", "refs/heads/dev"] {
        let set = token(branch, "workflow_dispatch", "github-hosted");
        assert_eq!(
            role_for(&set, Some("deploy")).as_deref(),
            Ok("deploy"),
            "{branch}"
        );
    }

    // Feature branches and pull requests: CI only.
    let feature = token("refs/heads/feature/x", "push", "github-hosted");
    assert_eq!(role_for(&feature, None).as_deref(), Ok("ci-read"));
    assert!(role_for(&feature, Some("deploy")).is_err());
    let pull = token("refs/pull/7/merge", "pull_request", "github-hosted");
    assert_eq!(role_for(&pull, None).as_deref(), Ok("ci-read"));
    // A deploy branch, but not a push or dispatch.
    let pr_on_master = token("refs/heads/master", "pull_request", "github-hosted");
    assert!(role_for(&pr_on_master, Some("deploy")).is_err());

    // Self-hosted runners never deploy or release.
    let self_hosted = token("refs/heads/master", "push", "self-hosted");
    assert!(matches!(
        role_for(&self_hosted, Some("deploy")),
        Err(Denial::DeniedByRule { .. })
    ));
    let tag = token("refs/tags/v1.2.3", "push", "github-hosted");
    assert_eq!(role_for(&tag, Some("release")).as_deref(), Ok("release"));
    let self_hosted_tag = token("refs/tags/v1.2.3", "push", "self-hosted");
    assert!(role_for(&self_hosted_tag, Some("release")).is_err());

    // Another owner with a look-alike name gets nothing.
    let mut impostor = token("refs/heads/master", "push", "github-hosted");
    impostor.insert("repository_owner_id", "7654321");
    assert!(matches!(
        role_for(&impostor, None),
        Err(Denial::NotPermitted { .. })
    ));
}
