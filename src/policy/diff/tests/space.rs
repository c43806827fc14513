//! Products of claim languages: points outside unions, budgets, real-size policies.

use super::policy;
use crate::policy::diff::lang::Undecided;
use crate::policy::diff::space::Space;
use crate::policy::diff::{GrantChange, diff_with_budget};

const TWO_RULES: &str = include_str!("../../../../tests/fixtures/policies/two_rules.toml");

#[test]
fn a_point_outside_a_union_must_escape_each_box_on_some_claim() {
    let p = policy(TWO_RULES);
    let mut space = Space::new(Space::patterns_of(&p.roles));
    let grants = space.grants(&p.roles[0]).unwrap();
    let point = space
        .find_point(&grants.allow[0], &grants.deny)
        .unwrap()
        .expect("single-segment branches other than a push to main are granted");
    let witness = space.witness(&point).unwrap();
    let claims = witness.to_claim_set();
    assert!(
        p.roles[0].allow[0].matches(claims.claim_set()),
        "{witness:?}"
    );
    assert!(
        !p.roles[0]
            .deny
            .iter()
            .any(|rule| rule.matches(claims.claim_set())),
        "{witness:?}"
    );
    // Deny everything the allow rule covers: no point is left.
    let mut excluded = grants.deny.clone();
    excluded.push(grants.allow[0].clone());
    assert_eq!(space.find_point(&grants.allow[0], &excluded).unwrap(), None);
    // The role minus itself is empty, and deciding it takes a handful of steps.
    assert_eq!(
        space.grant_difference(&grants, Some(&grants)).unwrap(),
        None
    );
    assert!(space.steps() < 20, "{} steps", space.steps());
}

#[test]
fn the_everything_product_contains_absent_claims() {
    let p = policy(TWO_RULES);
    let mut space = Space::new(Space::patterns_of(&p.roles));
    let grants = space.grants(&p.roles[0]).unwrap();
    // Outside the allow rule: some claim must fail; a point exists, e.g. ref absent.
    let everything = space.everything();
    let point = space
        .find_point(&everything, &grants.allow)
        .unwrap()
        .unwrap();
    assert!(
        !p.roles[0].allow[0].matches(space.witness(&point).unwrap().to_claim_set().claim_set())
    );
    assert!(space.same(&everything, &space.everything()));
    let lang = space.lang_of(&everything, "ref").unwrap();
    assert!(lang.has_absent());
}

#[test]
fn a_search_over_budget_is_undecided_not_wrong() {
    let old = policy(&many_roles(8, false));
    let new = policy(&many_roles(8, true));
    let result = diff_with_budget(&old, &new, 1);
    assert!(result.undecided());
    assert!(
        result
            .roles
            .iter()
            .all(|role| role.grants == GrantChange::Undecided)
    );
    let why = result.roles[0].undecided.as_deref().unwrap();
    assert_eq!(why, Undecided::Budget(1).to_string());
}

/// A policy shaped like a real one: `roles` roles of three allow rules (each a
/// handful of claims) and two deny rules. `variant` reorders every list and
/// widens one role, so the diff has real work to do.
fn many_roles(roles: usize, variant: bool) -> String {
    let mut text = String::new();
    for index in 0..roles {
        let mut allow = vec![
            format!(
                "repository_owner_id = \"1234567\"\nrepository = \"ourorg/service-{index}\"\nref = [\"refs/heads/main\", \"refs/heads/release/*\"]\nevent_name = [\"push\", \"workflow_dispatch\"]\n"
            ),
            format!(
                "repository_owner_id = \"1234567\"\nrepository_id = \"{}\"\nenvironment = [\"prod\", \"staging-*\"]\njob_workflow_ref = \"ourorg/workflows/.github/workflows/deploy.yml@refs/heads/main\"\n",
                1000 + index
            ),
            format!(
                "repository_owner_id = \"1234567\"\nrepository = \"ourorg/service-{index}\"\nref = \"refs/tags/v*\"\nref_type = \"tag\"\n"
            ),
        ];
        let mut deny = vec![
            "runner_environment = \"self-hosted\"\n".to_owned(),
            "event_name = [\"pull_request\", \"pull_request_target\"]\nactor = \"dependabot[bot]\"\n"
                .to_owned(),
        ];
        if variant {
            allow.reverse();
            deny.reverse();
            if index == roles / 2 {
                allow.push(format!(
                    "repository_owner_id = \"1234567\"\nrepository = \"ourorg/service-{index}\"\nref = \"refs/heads/hotfix/**\"\n"
                ));
            }
        }
        text.push_str(&format!(
            "[[roles]]\nname = \"role-{index}\"\nrole_arn = \"arn:aws:iam::123456789012:role/R{index}\"\n\n"
        ));
        for rule in allow {
            text.push_str(&format!("[[roles.allow]]\n{rule}\n"));
        }
        for rule in deny {
            text.push_str(&format!("[[roles.deny]]\n{rule}\n"));
        }
    }
    text
}

#[test]
fn real_size_policies_decide_within_a_small_budget() {
    let old = policy(&many_roles(40, false));
    let new = policy(&many_roles(40, true));
    // A budget of a thousand steps per question, far below the default.
    let started = std::time::Instant::now();
    let result = diff_with_budget(&old, &new, 1_000);
    assert!(
        !result.undecided(),
        "{:?}",
        result.roles.iter().find(|r| r.undecided.is_some())
    );
    for role in &result.roles {
        let expected = if role.role == "role-20" {
            GrantChange::Larger
        } else {
            GrantChange::Equal
        };
        assert_eq!(role.grants, expected, "{}", role.role);
    }
    // Generous: a debug build on a loaded machine; the point is "instantly", not a benchmark.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_rule_split_into_its_cartesian_product_decides_in_linear_steps() {
    let refs = ["main", "dev", "pre", "qa", "hotfix"];
    let events = ["push", "workflow_dispatch", "schedule", "release"];
    let envs = ["prod", "staging", "test"];
    let head = "[[roles]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n";
    let mut split = head.to_owned();
    for r in refs {
        for e in events {
            for v in envs {
                split.push_str(&format!(
                    "[[roles.allow]]\nrepository_owner_id = \"1\"\nref = \"refs/heads/{r}\"\nevent_name = \"{e}\"\nenvironment = \"{v}\"\n"
                ));
            }
        }
    }
    let list = |values: &[&str], prefix: &str| {
        values
            .iter()
            .map(|value| format!("\"{prefix}{value}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let whole = format!(
        "{head}[[roles.allow]]\nrepository_owner_id = \"1\"\nref = [{}]\nevent_name = [{}]\nenvironment = [{}]\n",
        list(&refs, "refs/heads/"),
        list(&events, ""),
        list(&envs, "")
    );
    let (split, whole) = (policy(&split), policy(&whole));
    let mut space =
        Space::new(Space::patterns_of(&split.roles).chain(Space::patterns_of(&whole.roles)));
    let (many, one) = (
        space.grants(&split.roles[0]).unwrap(),
        space.grants(&whole.roles[0]).unwrap(),
    );
    // About a step per rule: the 60 small rules tile the big one exactly.
    assert_eq!(space.grant_difference(&one, Some(&many)).unwrap(), None);
    assert!(space.steps() <= 100, "{} steps", space.steps());
    assert_eq!(space.grant_difference(&many, Some(&one)).unwrap(), None);
    assert!(space.steps() <= 100, "{} steps", space.steps());
}
