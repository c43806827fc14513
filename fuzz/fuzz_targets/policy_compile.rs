//! Policy loading on arbitrary text: `Policy::compile`, then (when it
//! compiles) evaluation and explanation against a fixed GitHub-shaped claim
//! set, so that whatever patterns the loader accepted also get matched.
//!
//! Invariants checked: nothing panics; an error renders; a compiled policy has
//! at least one role and every role at least one allow rule; `explain` reaches
//! the same decision as `evaluate`.

#![no_main]

use attestation_broker::claims::UnverifiedClaims;
use attestation_broker::policy::{AllowedCredential, Policy, RoleCredential, RoleRequest};
use libfuzzer_sys::fuzz_target;

fn claims() -> UnverifiedClaims {
    let mut claims = UnverifiedClaims::default();
    for (name, value) in [
        ("repository", "OurOrg/Widget-Service"),
        ("repository_owner", "ourorg"),
        ("repository_owner_id", "1234567"),
        ("repository_id", "811223344"),
        ("ref", "refs/heads/main"),
        ("ref_type", "branch"),
        ("ref_protected", "true"),
        ("event_name", "push"),
        ("environment", "production"),
        ("runner_environment", "github-hosted"),
        ("job_workflow_ref", "ourorg/widget-service/.github/workflows/deploy.yml@refs/heads/main"),
        ("sha", "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d"),
        ("actor", "Octocat"),
    ] {
        claims.insert(name, value);
    }
    claims
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = match Policy::compile(text, "fuzz.toml") {
        Ok(loaded) => loaded,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let policy = loaded.policy;
    let roles = policy.roles();
    assert!(!roles.is_empty(), "a compiled policy has roles");
    assert!(roles.iter().all(|role| role.allow_rules > 0));
    let claims = claims();
    let mut requests = vec![RoleRequest::default()];
    for role in &roles {
        requests.push(RoleRequest {
            role: Some(&role.name),
            duration_seconds: None,
            permissions: None,
        });
        if let RoleCredential::Aws {
            duration_seconds, ..
        } = &role.credential
        {
            requests.push(RoleRequest {
                role: Some(&role.name),
                duration_seconds: Some(u64::from(*duration_seconds)),
                permissions: None,
            });
        }
    }
    for request in &requests {
        let decision = policy.evaluate_unverified(&claims, request);
        let explanation = policy.explain(&claims, request);
        assert_eq!(decision, explanation.outcome);
        if let Ok(grant) = &decision
            && let AllowedCredential::Aws {
                duration_seconds, ..
            } = grant.credential()
        {
            assert!(*duration_seconds >= 900);
        }
    }
});
