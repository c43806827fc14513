//! Canned context answers: the facts decide as GitHub's would, and the file
//! is closed and bounded.

use super::*;

fn check(name: &str, app: Option<&str>) -> ContextCondition {
    ContextCondition::CheckPassed {
        name: name.to_owned(),
        app: app.map(str::to_owned),
    }
}

#[test]
fn answers_follow_the_facts() {
    let canned = CannedContext::parse(
        r#"{"checks": {
              "dependency-scan": {"status": "completed", "conclusion": "success", "app": "snyk"},
              "unit-tests": {"status": "completed", "conclusion": "failure", "app": "github-actions"},
              "lint": {"status": "in_progress", "conclusion": null, "app": "github-actions"},
              "flaky": "unavailable"},
            "pull_request": {"number": 17, "approvals": 1, "changes_requested": false}}"#,
    )
    .unwrap();
    let conditions = [
        check("dependency-scan", None),
        check("dependency-scan", Some("snyk")),
        check("dependency-scan", Some("github-actions")),
        check("unit-tests", None),
        check("lint", None),
        check("missing", None),
        check("flaky", Some("x")),
        ContextCondition::PullRequestApprovals(1),
        ContextCondition::PullRequestApprovals(2),
    ];
    let answers = canned.answers(&conditions);
    let got: Vec<String> = conditions
        .iter()
        .map(|condition| {
            let answer = answers.get(condition).unwrap();
            format!("{}: {}", answer.label(), answer.detail())
        })
        .collect();
    assert_eq!(
        got,
        [
            "pass: completed/success by snyk",
            "pass: completed/success by snyk",
            "fail: no run by app \"github-actions\" (latest run by snyk)",
            "fail: completed/failure by github-actions",
            "fail: in_progress/none by github-actions",
            "fail: no check run named \"missing\"",
            "unavailable: unavailable in the context file",
            "pass: 1 approvals of pull request 17",
            "fail: 1 approvals of pull request 17",
        ]
    );
    let blocked = CannedContext::parse(
        r#"{"pull_request": {"number": 3, "approvals": 5, "changes_requested": true}}"#,
    )
    .unwrap();
    assert_eq!(
        blocked
            .answers(&[ContextCondition::PullRequestApprovals(1)])
            .get(&ContextCondition::PullRequestApprovals(1)),
        Some(&ContextAnswer::Fail(
            "changes requested on pull request 3".into()
        ))
    );
    for none in [r#"{"pull_request": null}"#, "{}"] {
        let canned = CannedContext::parse(none).unwrap();
        assert_eq!(
            canned
                .answers(&[ContextCondition::PullRequestApprovals(1)])
                .get(&ContextCondition::PullRequestApprovals(1))
                .map(ContextAnswer::label),
            Some("fail")
        );
    }
}

#[test]
fn the_file_is_closed_and_bounded() {
    let long = "x".repeat(MAX_TEXT_CHARS + 1);
    let many: Vec<String> = (0..=MAX_CHECKS)
        .map(|index| format!("\"c{index}\": \"unavailable\""))
        .collect();
    let cases = [
        (r#"[]"#.to_owned(), "must be a JSON object"),
        (r#"{"check": {}}"#.to_owned(), "unknown key \"check\""),
        (
            r#"{"checks": {"a": {"status": "completed", "colour": 1}}}"#.to_owned(),
            "unknown key \"colour\"",
        ),
        (
            r#"{"checks": {"a": {}}}"#.to_owned(),
            "`status` is required",
        ),
        (r#"{"checks": {"a": true}}"#.to_owned(), "must be a run"),
        (
            r#"{"pull_request": {"number": 1}}"#.to_owned(),
            "`approvals` is required",
        ),
        (
            r#"{"pull_request": {"number": 1, "approvals": -1}}"#.to_owned(),
            "non-negative integer",
        ),
        (
            r#"{"pull_request": {"number": 1, "approvals": 1, "merged": true}}"#.to_owned(),
            "unknown key \"merged\"",
        ),
        (
            format!(r#"{{"checks": {{"{long}": "unavailable"}}}}"#),
            "longer than 256 characters",
        ),
        (
            format!(r#"{{"checks": {{{}}}}}"#, many.join(",")),
            "more than 256 checks",
        ),
        (
            format!(r#"{{"pad": "{}"}}"#, "x".repeat(64 * 1024)),
            "larger than 65536 bytes",
        ),
    ];
    for (text, expected) in cases {
        let error = CannedContext::parse(&text).unwrap_err();
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
    }
}
