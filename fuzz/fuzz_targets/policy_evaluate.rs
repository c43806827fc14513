//! Policy evaluation of a fixed small policy against arbitrary claim sets and
//! role requests: what an attacker controls once its token verifies (the
//! claim values, and `role` / `duration_seconds` in the body).
//!
//! Input format, readable in seeds: one `name=value` claim per line; the
//! special lines `@role=NAME` and `@duration=N` fill the role request. A line
//! without `=` is a claim with an empty value.
//!
//! Invariants checked: nothing panics; `explain` agrees with `evaluate`; a
//! self-hosted runner never gets `deploy` or `release` (their deny rule); every
//! grant binds the owner id; a grant's duration is within 900..=the role's.

#![no_main]

use std::sync::OnceLock;

use attestation_broker::claims::UnverifiedClaims;
use attestation_broker::policy::{AllowedCredential, Denial, Policy, RoleCredential, RoleRequest};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = include_str!("../../tests/fixtures/policies/fuzz_evaluate.toml");

fn policy() -> &'static Policy {
    static POLICY_CELL: OnceLock<Policy> = OnceLock::new();
    POLICY_CELL.get_or_init(|| Policy::compile(POLICY, "fuzz-policy.toml").unwrap().policy)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut claims = UnverifiedClaims::default();
    let mut role = None;
    let mut duration_seconds = None;
    for line in text.split('\n') {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        match name {
            "@role" => role = Some(value),
            "@duration" => duration_seconds = value.parse::<u64>().ok(),
            _ => claims.insert(name, value),
        }
    }
    let request = RoleRequest {
        role,
        duration_seconds,
        permissions: None,
    };
    let policy = policy();
    let decision = policy.evaluate_unverified(&claims, &request);
    let explanation = policy.explain(&claims, &request);
    assert_eq!(decision, explanation.outcome);
    match &decision {
        Ok(grant) => {
            // deploy and release deny self-hosted runners; ci-read does not.
            if grant.role_name() != "ci-read" {
                assert_ne!(claims.get("runner_environment"), Some("self-hosted"));
            }
            assert_eq!(claims.get("repository_owner_id"), Some("1234567"));
            let max = policy
                .roles()
                .into_iter()
                .find(|summary| summary.name == grant.role_name())
                .and_then(|summary| match summary.credential {
                    RoleCredential::Aws {
                        duration_seconds, ..
                    } => Some(duration_seconds),
                    RoleCredential::GitHub { .. } => None,
                })
                .unwrap();
            let AllowedCredential::Aws {
                duration_seconds, ..
            } = grant.credential()
            else {
                panic!("the fuzzed policy has AWS roles only");
            };
            assert!((900..=max).contains(duration_seconds));
        }
        Err(Denial::NotPermitted { first_failed, .. }) => {
            assert!(first_failed.chars().count() <= 1024, "audit detail is bounded");
            assert!(!first_failed.contains('\n'), "audit detail is one line");
        }
        Err(_) => {}
    }
});
