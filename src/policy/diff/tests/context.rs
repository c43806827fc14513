//! `policy diff` on context conditions: conditions like any other.

use super::policy;
use crate::policy::diff::{GrantChange, diff};
use crate::policy::{Policy, RoleRequest};

const HEAD: &str = "[[roles]]\nname = \"deploy\"\nrole_arn = \"arn:aws:iam::123456789012:role/Deploy\"\n\
                    [[roles.allow]]\nrepository_owner_id = \"1234567\"\nref = \"refs/heads/main\"\n";

fn deploy(context: &str) -> Policy {
    policy(&format!("{HEAD}{context}\n"))
}

/// The verdict for `deploy` and the one-line witnesses, each confirmed on
/// both policies with the answers its commit facts give.
fn compare(old: &Policy, new: &Policy) -> (GrantChange, Option<String>, Option<String>) {
    let found = diff(old, new);
    let role = found.roles.first().unwrap();
    assert_eq!(role.undecided, None);
    let request = RoleRequest {
        role: Some("deploy"),
        ..RoleRequest::default()
    };
    let granted = |policy: &Policy, witness: &crate::policy::diff::Witness| {
        let answers = witness.answers(&policy.context_conditions(&request));
        policy
            .evaluate_unverified_in_context(&witness.to_claim_set(), &request, &answers)
            .is_ok()
    };
    if let Some(witness) = &role.larger_witness {
        assert!(
            granted(new, witness) && !granted(old, witness),
            "{witness:?}"
        );
    }
    if let Some(witness) = &role.smaller_witness {
        assert!(
            granted(old, witness) && !granted(new, witness),
            "{witness:?}"
        );
    }
    (
        role.grants,
        role.larger_witness.as_ref().map(|w| w.one_line()),
        role.smaller_witness.as_ref().map(|w| w.one_line()),
    )
}

#[test]
fn removing_a_required_check_broadens_with_a_witness_naming_it() {
    let old = deploy("checks_passed = [\"dependency-scan\", \"unit-tests\"]");
    let new = deploy("checks_passed = [\"unit-tests\"]");
    let (grants, larger, smaller) = compare(&old, &new);
    assert_eq!(grants, GrantChange::Larger);
    assert_eq!(smaller, None);
    assert_eq!(
        larger.unwrap(),
        "ref=\"refs/heads/main\" repository_owner_id=\"1234567\"; commit: `dependency-scan` not passed, `unit-tests` passed"
    );
    // Adding it back narrows.
    let (grants, larger, smaller) = compare(&new, &old);
    assert_eq!(grants, GrantChange::Smaller);
    assert_eq!(larger, None);
    assert!(smaller.unwrap().contains("`dependency-scan` not passed"));
    // Dropping every context condition broadens too.
    let (grants, _, _) = compare(&new, &deploy(""));
    assert_eq!(grants, GrantChange::Larger);
}

#[test]
fn dropping_an_app_binding_broadens() {
    let old = deploy("checks_passed = [{ name = \"dependency-scan\", app = \"snyk\" }]");
    let new = deploy("checks_passed = [\"dependency-scan\"]");
    let (grants, larger, _) = compare(&old, &new);
    // Each (check, app) is its own fact: a run by another App may pass
    // while snyk's did not, and the other way round.
    assert_eq!(grants, GrantChange::Both);
    assert!(
        larger
            .unwrap()
            .contains("`dependency-scan` passed, `dependency-scan` by app `snyk` not passed"),
    );
    assert!(diff(&old, &new).broadens());
}

#[test]
fn lowering_an_approval_count_broadens_and_raising_it_narrows() {
    let two = deploy("pull_request_approvals = 2");
    let one = deploy("pull_request_approvals = 1");
    let (grants, larger, smaller) = compare(&two, &one);
    assert_eq!(grants, GrantChange::Larger);
    assert_eq!(smaller, None);
    assert!(
        larger
            .unwrap()
            .ends_with("; commit: a pull request with 1 approvals"),
    );
    let (grants, larger, smaller) = compare(&one, &two);
    assert_eq!(grants, GrantChange::Smaller);
    assert_eq!(larger, None);
    assert!(
        smaller
            .unwrap()
            .ends_with("a pull request with 1 approvals")
    );
    // Equal counts, written in another order of keys: equal.
    let (grants, _, _) = compare(
        &deploy("pull_request_approvals = 2\nchecks_passed = [\"a\", \"b\"]"),
        &deploy("checks_passed = [\"b\", \"a\"]\npull_request_approvals = 2"),
    );
    assert_eq!(grants, GrantChange::Equal);
    // Requiring approvals where there were none narrows: no pull request.
    let (grants, _, smaller) = compare(&deploy(""), &one);
    assert_eq!(grants, GrantChange::Smaller);
    let smaller = smaller.unwrap();
    assert!(
        smaller.ends_with("no pull request") || smaller.ends_with("with 0 approvals"),
        "{smaller}"
    );
}

#[test]
fn witnesses_carry_their_commit_facts_in_json() {
    let old = deploy("checks_passed = [\"dependency-scan\"]\npull_request_approvals = 1");
    let new = deploy("pull_request_approvals = 1");
    let found = diff(&old, &new);
    let witness = found.roles[0].larger_witness.as_ref().unwrap();
    assert_eq!(
        serde_json::to_value(witness).unwrap(),
        serde_json::json!({
            "ref": "refs/heads/main",
            "repository_owner_id": "1234567",
            "$context": {
                "checks": [{"name": "dependency-scan", "app": null, "passed": false}],
                "pull_request": {"approvals": 1}
            }
        })
    );
}

#[test]
fn github_roles_compare_their_repositories_and_permissions() {
    let github = |settings: &str| {
        policy(&format!(
            "[[roles]]\nname = \"deploy\"\nkind = \"github\"\n{settings}\n\
             [[roles.allow]]\nrepository_owner_id = \"1234567\"\nref = \"refs/heads/main\"\n"
        ))
    };
    let old = github("permissions = { contents = \"read\" }");
    let new = github(
        "permissions = { contents = \"write\", issues = \"read\" }\nrepositories = [\"$repository\", \"ourorg/docs\"]",
    );
    let found = diff(&old, &new);
    let role = &found.roles[0];
    let changes: Vec<(&str, bool)> = role
        .changes
        .iter()
        .map(|change| (change.field, change.review))
        .collect();
    assert_eq!(changes, [("repositories", true), ("permissions", true)]);
    // A named repository pins the owner: fewer tokens qualify.
    assert_eq!(role.grants, GrantChange::Smaller);
    assert!(found.broadens());
    let back = diff(&new, &old);
    let changes: Vec<(&str, bool)> = back.roles[0]
        .changes
        .iter()
        .map(|change| (change.field, change.review))
        .collect();
    assert_eq!(changes, [("repositories", false), ("permissions", false)]);
    // Another kind of credential for the same tokens always needs review.
    let aws = deploy("");
    let found = diff(&aws, &old);
    assert_eq!(found.roles[0].changes[0].field, "kind");
    assert!(found.roles[0].changes[0].review);
}
