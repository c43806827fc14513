//! `policy diff` over a table of policy pairs: the verdict per role, and every
//! witness checked independently with `Policy::evaluate` on both policies.

use super::policy;
use crate::policy::diff::{GrantChange, Presence, Witness, diff};
use crate::policy::{Policy, RoleRequest};

const ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-Deploy";
const OTHER_ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-Admin";

/// A one-role policy named `deploy`: the header plus `rules` (TOML tables).
fn deploy(rules: &str) -> String {
    role("deploy", ARN, "", rules)
}

fn role(name: &str, arn: &str, settings: &str, rules: &str) -> String {
    format!("[[roles]]\nname = \"{name}\"\nrole_arn = \"{arn}\"\n{settings}\n{rules}\n")
}

/// The usual org binding, to keep the table readable.
const ORG: &str = "repository_owner_id = \"1234567\"\nrepository = \"ourorg/app\"\n";

struct Case {
    name: &'static str,
    old: String,
    new: String,
    /// (role, presence, grants, fields changed, broadens)
    expect: Vec<(
        &'static str,
        Presence,
        GrantChange,
        &'static [&'static str],
        bool,
    )>,
}

fn cases() -> Vec<Case> {
    use GrantChange::{Both, Equal, Larger, Smaller};
    use Presence::{Added, Kept, Removed};
    vec![
        Case {
            name: "equal by reorder of rules, patterns and keys",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = [\"refs/heads/main\", \"refs/heads/dev\"]\nevent_name = \"push\"\n\
                 [[roles.allow]]\n{ORG}ref = \"refs/tags/v*\"\n\
                 [[roles.deny]]\nrunner_environment = \"self-hosted\"\n\
                 [[roles.deny]]\nactor = \"mallory\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\nref = \"refs/tags/v*\"\n{ORG}\
                 [[roles.allow]]\nevent_name = \"push\"\nref = [\"refs/heads/dev\", \"refs/heads/main\"]\n{ORG}\
                 [[roles.deny]]\nactor = \"mallory\"\n\
                 [[roles.deny]]\nrunner_environment = \"self-hosted\"\n"
            )),
            expect: vec![("deploy", Kept, Equal, &[], false)],
        },
        Case {
            name: "equal by splitting one rule into two",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = [\"refs/heads/main\", \"refs/heads/dev\"]\nevent_name = [\"push\", \"workflow_dispatch\"]\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nevent_name = [\"push\", \"workflow_dispatch\"]\n\
                 [[roles.allow]]\n{ORG}ref = \"refs/heads/dev\"\nevent_name = \"push\"\n\
                 [[roles.allow]]\n{ORG}ref = \"refs/heads/dev\"\nevent_name = \"workflow_dispatch\"\n"
            )),
            expect: vec![("deploy", Kept, Equal, &[], false)],
        },
        Case {
            name: "equal: a redundant rule inside another",
            old: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/**\"\n")),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/**\"\n[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nevent_name = \"push\"\n"
            )),
            expect: vec![("deploy", Kept, Equal, &[], false)],
        },
        Case {
            name: "equal: deny rules carve exactly the old language out of a wider glob",
            old: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/m??\"\n")),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/m*\"\n\
                 [[roles.deny]]\nref = [\"refs/heads/m\", \"refs/heads/m?\", \"refs/heads/m???*\"]\n"
            )),
            expect: vec![("deploy", Kept, Equal, &[], false)],
        },
        Case {
            name: "case-only change on repository (case-insensitive) is equal",
            old: deploy(
                "[[roles.allow]]\nrepository_owner_id = \"1\"\nrepository = \"OurOrg/App\"\nref = \"refs/heads/main\"\n",
            ),
            new: deploy(
                "[[roles.allow]]\nrepository_owner_id = \"1\"\nrepository = \"ourorg/app\"\nref = \"refs/heads/main\"\n",
            ),
            expect: vec![("deploy", Kept, Equal, &[], false)],
        },
        Case {
            name: "case-only change on ref (exact) changes both ways",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/Main\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            expect: vec![("deploy", Kept, Both, &[], true)],
        },
        Case {
            name: "widened ref glob",
            old: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n")),
            new: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/**\"\n")),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
        Case {
            name: "added deny rule",
            old: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n")),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n[[roles.deny]]\nrunner_environment = \"self-hosted\"\n"
            )),
            expect: vec![("deploy", Kept, Smaller, &[], false)],
        },
        Case {
            name: "removed deny rule",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n[[roles.deny]]\nevent_name = \"pull_request\"\n"
            )),
            new: deploy(&format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n")),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
        Case {
            name: "added allow rule",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n[[roles.allow]]\n{ORG}ref = \"refs/tags/*\"\n"
            )),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
        Case {
            name: "narrowed and widened at once",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = [\"refs/heads/main\", \"refs/heads/dev\"]\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = [\"refs/heads/main\", \"refs/heads/release/*\"]\n"
            )),
            expect: vec![("deploy", Kept, Both, &[], true)],
        },
        Case {
            name: "ARN change: same grants, always needs review",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            new: role(
                "deploy",
                OTHER_ARN,
                "",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"),
            ),
            expect: vec![("deploy", Kept, Equal, &["role_arn"], true)],
        },
        Case {
            name: "longer duration needs review",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            new: role(
                "deploy",
                ARN,
                "duration_seconds = 3600",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"),
            ),
            expect: vec![("deploy", Kept, Equal, &["duration_seconds"], true)],
        },
        Case {
            name: "shorter duration and session tags turned on do not",
            old: role(
                "deploy",
                ARN,
                "duration_seconds = 3600\nsession_tags = false",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"),
            ),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            expect: vec![(
                "deploy",
                Kept,
                Equal,
                &["duration_seconds", "session_tags"],
                false,
            )],
        },
        Case {
            name: "session tags turned off needs review",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            new: role(
                "deploy",
                ARN,
                "session_tags = false",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"),
            ),
            expect: vec![("deploy", Kept, Equal, &["session_tags"], true)],
        },
        Case {
            name: "role added and role removed",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )) + &role(
                "legacy",
                OTHER_ARN,
                "",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/heads/legacy\"\n"),
            ),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )) + &role(
                "publish",
                OTHER_ARN,
                "",
                &format!("[[roles.allow]]\n{ORG}ref = \"refs/tags/*\"\n"),
            ),
            expect: vec![
                ("deploy", Kept, Equal, &[], false),
                ("legacy", Removed, Smaller, &[], false),
                ("publish", Added, Larger, &[], true),
            ],
        },
        Case {
            name: "an added role that can never grant",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )) + &role(
                "never",
                OTHER_ARN,
                "",
                "[[roles.allow]]\nref = \"refs/heads/*\"\n[[roles.deny]]\nref = \"**\"\n",
            ),
            expect: vec![
                ("deploy", Kept, Equal, &[], false),
                ("never", Added, Equal, &[], false),
            ],
        },
        Case {
            name: "removing a deny on an absent-capable claim",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n[[roles.deny]]\nenvironment = \"**\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
        Case {
            name: "dropping a required optional claim admits tokens without it",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nenvironment = \"**\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
            )),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
        Case {
            name: "trading a required claim for a deny on its absence-blind pattern",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nenvironment = \"prod\"\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n[[roles.deny]]\nenvironment = \"?*\"\n"
            )),
            expect: vec![("deploy", Kept, Both, &[], true)],
        },
        Case {
            name: "a split on a different claim than the one changed",
            old: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nevent_name = [\"push\", \"workflow_dispatch\"]\n"
            )),
            new: deploy(&format!(
                "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nevent_name = \"push\"\n\
                 [[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\nevent_name = \"workflow_dispatch\"\n"
            )),
            expect: vec![("deploy", Kept, Larger, &[], true)],
        },
    ]
}

/// `granting` grants the named role for `witness`, and `refusing` does not.
fn assert_witness(granting: &Policy, refusing: &Policy, role: &str, witness: &Witness, case: &str) {
    let claims = witness.to_claim_set();
    let request = RoleRequest {
        role: Some(role),
        duration_seconds: None,
        permissions: None,
    };
    assert!(
        granting.evaluate_unverified(&claims, &request).is_ok(),
        "{case}: witness not granted: {}",
        witness.one_line()
    );
    assert!(
        refusing.evaluate_unverified(&claims, &request).is_err(),
        "{case}: witness granted by both: {}",
        witness.one_line()
    );
}

#[test]
fn diff_table() {
    for case in cases() {
        let old = policy(&case.old);
        let new = policy(&case.new);
        let result = diff(&old, &new);
        let got: Vec<&str> = result.roles.iter().map(|role| role.role.as_str()).collect();
        let want: Vec<&str> = case.expect.iter().map(|expect| expect.0).collect();
        assert_eq!(got, want, "{}: roles", case.name);
        for (role, (name, presence, grants, fields, broadens)) in
            result.roles.iter().zip(&case.expect)
        {
            let label = format!("{}: role {name}", case.name);
            assert_eq!(role.presence, *presence, "{label}");
            assert_eq!(role.grants, *grants, "{label}: {role:?}");
            let changed: Vec<&str> = role.changes.iter().map(|change| change.field).collect();
            assert_eq!(changed, *fields, "{label}");
            assert_eq!(role.broadens(), *broadens, "{label}");
            let larger = matches!(grants, GrantChange::Larger | GrantChange::Both);
            let smaller = matches!(grants, GrantChange::Smaller | GrantChange::Both);
            assert_eq!(role.larger_witness.is_some(), larger, "{label}");
            assert_eq!(role.smaller_witness.is_some(), smaller, "{label}");
            if let Some(witness) = &role.larger_witness {
                assert_witness(&new, &old, name, witness, &label);
            }
            if let Some(witness) = &role.smaller_witness {
                assert_witness(&old, &new, name, witness, &label);
            }
        }
        // The comparison is antisymmetric: swapping the files swaps the directions.
        let back = diff(&new, &old);
        for role in result
            .roles
            .iter()
            .filter(|role| role.presence == Presence::Kept)
        {
            let reverse = back.roles.iter().find(|r| r.role == role.role).unwrap();
            let flipped = match role.grants {
                GrantChange::Larger => GrantChange::Smaller,
                GrantChange::Smaller => GrantChange::Larger,
                other => other,
            };
            assert_eq!(reverse.grants, flipped, "{}: reversed", case.name);
        }
    }
}

#[test]
fn witnesses_name_absent_claims_explicitly() {
    let old = policy(&deploy(&format!(
        "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\nenvironment = \"**\"\n"
    )));
    let new = policy(&deploy(&format!(
        "[[roles.allow]]\n{ORG}ref = \"refs/heads/main\"\n"
    )));
    let result = diff(&old, &new);
    let witness = result.roles[0].larger_witness.as_ref().unwrap();
    assert_eq!(
        witness.claims.get("environment"),
        Some(&None),
        "{witness:?}"
    );
    assert_eq!(
        witness.claims.get("ref"),
        Some(&Some("refs/heads/main".to_owned()))
    );
    assert_eq!(
        serde_json::to_value(witness).unwrap()["environment"],
        serde_json::Value::Null,
        "absent is JSON null, which `--claims` reads as absent"
    );
}

#[test]
fn widened_glob_witness_uses_the_new_part() {
    let old = policy(&deploy(&format!(
        "[[roles.allow]]\n{ORG}ref = \"refs/heads/*\"\n"
    )));
    let new = policy(&deploy(&format!(
        "[[roles.allow]]\n{ORG}ref = \"refs/heads/**\"\n"
    )));
    let witness = diff(&old, &new).roles[0].larger_witness.clone().unwrap();
    assert_eq!(
        witness.claims.get("ref"),
        Some(&Some("refs/heads/x/x".to_owned()))
    );
}
