//! Roles of kind `github`: loading, and what they grant to a token.

use super::{claims, compile_ok, load_error};
use crate::api::{Access, Permissions};
use crate::policy::{AllowedCredential, Denial, Policy, RoleCredential, RoleRequest};

const POLICY: &str = include_str!("../../../tests/fixtures/policies/github.toml");

const ALLOW: &str = "[[roles.allow]]\nrepository_owner_id = \"1234567\"\n";

fn github_role(extra: &str) -> String {
    format!("[[roles]]\nname = \"gh\"\nkind = \"github\"\n{extra}\n{ALLOW}")
}

fn permissions(pairs: &[(&str, Access)]) -> Permissions {
    pairs
        .iter()
        .map(|(name, access)| ((*name).to_owned(), *access))
        .collect()
}

fn named<'a>(role: &'a str, asked: Option<&'a Permissions>) -> RoleRequest<'a> {
    RoleRequest {
        role: Some(role),
        duration_seconds: None,
        permissions: asked,
    }
}

fn token(repository: &str, git_ref: &str) -> crate::claims::UnverifiedClaims {
    claims(&[
        ("repository", repository),
        ("repository_owner_id", "1234567"),
        ("ref", git_ref),
    ])
}

/// `(owner, repositories, permissions)` of a GitHub grant.
fn github(
    policy: &Policy,
    claims: &crate::claims::UnverifiedClaims,
    request: &RoleRequest<'_>,
) -> (String, Vec<String>, Permissions) {
    match policy.evaluate_unverified(claims, request) {
        Ok(allowed) => match allowed.credential() {
            AllowedCredential::GitHub {
                owner,
                repositories,
                permissions,
            } => (owner.clone(), repositories.clone(), permissions.clone()),
            AllowedCredential::Aws { .. } => panic!("a GitHub role granted AWS credentials"),
        },
        Err(denial) => panic!("expected a grant, got {denial:?}"),
    }
}

#[test]
fn github_roles_load_and_list_their_kind() {
    let policy = compile_ok(POLICY).policy;
    let roles = policy.roles();
    let kinds: Vec<&str> = roles.iter().map(|role| role.credential.kind()).collect();
    assert_eq!(kinds, ["aws", "github", "github"]);
    assert_eq!(
        roles[1].credential,
        RoleCredential::GitHub {
            repositories: vec!["$repository".into()],
            permissions: permissions(&[
                ("contents", Access::Write),
                ("pull_requests", Access::Read)
            ]),
        }
    );
    assert_eq!(
        roles[2].credential,
        RoleCredential::GitHub {
            repositories: vec![
                "$repository".into(),
                "OurOrg/docs".into(),
                "ourorg/app".into()
            ],
            permissions: permissions(&[("contents", Access::Write)]),
        }
    );
}

#[test]
fn github_role_errors_are_all_reported_with_their_keys() {
    // (role keys, expected `key: reason` fragments, in order)
    let cases: &[(&str, &[&str])] = &[
        ("", &["key `roles[0].permissions`: missing required key"]),
        (
            "permissions = {}",
            &["key `roles[0].permissions`: empty table"],
        ),
        (
            "permissions = \"write\"",
            &["key `roles[0].permissions`: must be an inline table"],
        ),
        (
            "permissions = { content = \"read\", workflows = \"read\", issues = \"admin\", checks = 1 }",
            &[
                "key `roles[0].permissions.checks`: must be one of \"read\", \"write\" for this permission, found integer",
                "key `roles[0].permissions.content`: not a GitHub App permission",
                "key `roles[0].permissions.issues`: must be one of \"read\", \"write\" for this permission, found \"admin\"",
                "key `roles[0].permissions.workflows`: must be one of \"write\" for this permission, found \"read\"",
            ],
        ),
        (
            "permissions = { contents = \"read\" }\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nduration_seconds = 900\nsession_tags = false",
            &[
                "key `roles[0].role_arn`: only for roles of kind `aws`",
                "key `roles[0].duration_seconds`: only for roles of kind `aws`",
                "key `roles[0].session_tags`: only for roles of kind `aws`",
            ],
        ),
        (
            "permissions = { contents = \"read\" }\nrepositories = []",
            &["key `roles[0].repositories`: empty list"],
        ),
        (
            "permissions = { contents = \"read\" }\nrepositories = [\"ourorg/*\", \"$repository\", 7, \"OurOrg/App\", \"ourorg/app\", \"$repository\"]",
            &[
                "key `roles[0].repositories[0]`: \"ourorg/*\" is not a GitHub repository",
                "key `roles[0].repositories[2]`: must be a string",
                "key `roles[0].repositories[4]`: duplicate repository \"ourorg/app\"",
                "key `roles[0].repositories[5]`: duplicate repository \"$repository\"",
            ],
        ),
    ];
    for (extra, expected) in cases {
        let text = github_role(extra);
        let error = load_error(&text);
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{error}");
        for (line, fragment) in lines.iter().zip(expected.iter()) {
            assert!(line.starts_with("test.toml: "), "{line}");
            assert!(line.contains(fragment), "{line}\nexpected: {fragment}");
        }
    }
    // The other way round: github-only keys on an AWS role, and an unknown kind.
    let aws = "[[roles]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n\
               repositories = [\"$repository\"]\npermissions = { contents = \"read\" }\n"
        .to_owned()
        + ALLOW;
    let error = load_error(&aws);
    assert_eq!(
        error,
        "test.toml: key `roles[0].repositories`: only for roles of kind `github`; this role is of kind `aws` (the default)\n\
         test.toml: key `roles[0].permissions`: only for roles of kind `github`; this role is of kind `aws` (the default)"
    );
    let error = load_error(&format!("[[roles]]\nname = \"a\"\nkind = \"gcp\"\n{ALLOW}"));
    assert_eq!(
        error,
        "test.toml: key `roles[0].kind`: unknown kind \"gcp\": expected \"aws\" or \"github\""
    );
}

#[test]
fn the_grant_reaches_the_tokens_repository_with_the_roles_permissions() {
    let policy = compile_ok(POLICY).policy;
    let (owner, repositories, granted) = github(
        &policy,
        &token("OurOrg/API", "refs/heads/main"),
        &named("release-notes", None),
    );
    assert_eq!(owner, "OurOrg");
    assert_eq!(repositories, ["API"]);
    assert_eq!(
        granted,
        permissions(&[("contents", Access::Write), ("pull_requests", Access::Read)])
    );
    // Named repositories of the same owner (any case), sorted, without duplicates.
    let (owner, repositories, _) = github(
        &policy,
        &token("ourorg/app", "refs/heads/release/1"),
        &named("docs-sync", None),
    );
    assert_eq!(owner, "ourorg");
    assert_eq!(repositories, ["app", "docs"]);
}

#[test]
fn a_repository_of_another_owner_is_refused() {
    let policy = compile_ok(POLICY).policy;
    assert_eq!(
        policy.evaluate_unverified(
            &token("theirorg/app", "refs/heads/release/1"),
            &named("docs-sync", None)
        ),
        Err(Denial::RepositoryOfOtherOwner {
            role: "docs-sync".into(),
            detail: "OurOrg/docs is not of the token's owner \"theirorg\"".into(),
        })
    );
    let denial = policy
        .evaluate_unverified(
            &token("no-slash", "refs/heads/main"),
            &named("release-notes", None),
        )
        .unwrap_err();
    assert_eq!(denial.reason_code(), "github_repository_other_owner");
}

#[test]
fn the_request_narrows_the_permissions_and_never_widens_them() {
    let policy = compile_ok(POLICY).policy;
    let main = token("ourorg/api", "refs/heads/main");
    let read_contents = permissions(&[("contents", Access::Read)]);
    let (_, _, granted) = github(
        &policy,
        &main,
        &named("release-notes", Some(&read_contents)),
    );
    assert_eq!(granted, read_contents, "exactly the permissions asked");
    let same = permissions(&[("contents", Access::Write), ("pull_requests", Access::Read)]);
    assert_eq!(
        github(&policy, &main, &named("release-notes", Some(&same))).2,
        same
    );
    let beyond = |asked: Permissions, detail: &str| {
        assert_eq!(
            policy.evaluate_unverified(&main, &named("release-notes", Some(&asked))),
            Err(Denial::PermissionsBeyondRole {
                role: "release-notes".into(),
                detail: detail.into(),
            }),
            "{asked:?}"
        );
    };
    beyond(
        permissions(&[("pull_requests", Access::Write)]),
        "pull_requests: asked write, the role grants read",
    );
    beyond(
        permissions(&[("contents", Access::Admin)]),
        "contents: asked admin, the role grants write",
    );
    beyond(
        permissions(&[("contents", Access::Read), ("issues", Access::Read)]),
        "\"issues\" is not granted by the role",
    );
    beyond(
        Permissions::new(),
        "the request asks for no permission at all",
    );
    assert_eq!(
        Denial::PermissionsBeyondRole {
            role: String::new(),
            detail: String::new()
        }
        .reason_code(),
        "github_permissions_beyond_role"
    );
}

#[test]
fn fields_of_the_other_kind_are_refused_once_the_role_is_granted() {
    let policy = compile_ok(POLICY).policy;
    let main = token("ourorg/api", "refs/heads/main");
    let asked = permissions(&[("contents", Access::Read)]);
    let denial = policy
        .evaluate_unverified(&main, &named("deploy", Some(&asked)))
        .unwrap_err();
    assert_eq!(
        denial,
        Denial::FieldNotForKind {
            role: "deploy".into(),
            field: "permissions",
            kind: "aws"
        }
    );
    assert_eq!(denial.reason_code(), "field_not_for_role_kind");
    let request = RoleRequest {
        role: Some("release-notes"),
        duration_seconds: Some(900),
        permissions: None,
    };
    assert_eq!(
        policy.evaluate_unverified(&main, &request),
        Err(Denial::FieldNotForKind {
            role: "release-notes".into(),
            field: "duration_seconds",
            kind: "github"
        })
    );
    // Not granted at all: the claims' answer, whatever the fields.
    let outsider = token("ourorg/api", "refs/heads/feature");
    assert!(matches!(
        policy.evaluate_unverified(&outsider, &request),
        Err(Denial::NotPermitted { .. })
    ));
}
