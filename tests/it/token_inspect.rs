//! `token inspect` runs the server's verification pipeline offline: it
//! refuses what the server refuses, and says what it did not check.

use serde_json::json;

use crate::support::KEY_A;
use crate::support::broker::{RunOutput, run_to_completion};
use crate::support::tokens::AUDIENCE;

const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Exit code of a token that does not verify (or was not fully checked).
const EXIT_REFUSED: i32 = 1;

/// Runs `token inspect TOKEN --jwks FILE` (KEY_A published) plus `extra`.
async fn inspect(token: &str, extra: &[&str]) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token.jwt");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&token_path, token).unwrap();
    std::fs::write(&jwks_path, json!({"keys": [KEY_A.jwk()]}).to_string()).unwrap();
    let token_arg = token_path.display().to_string();
    let jwks_arg = jwks_path.display().to_string();
    let mut args = vec!["token", "inspect", &token_arg, "--jwks", &jwks_arg];
    args.extend_from_slice(extra);
    run_to_completion(&args, &[]).await
}

/// With the issuer and audience to check, as the server has them.
async fn inspect_fully(token: &str) -> RunOutput {
    inspect(token, &["--issuer", ISSUER, "--audience", AUDIENCE]).await
}

fn check_line<'a>(out: &'a RunOutput, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|line| {
            let rest = line.trim_start();
            rest.get(6..)
                .is_some_and(|rest| rest == name || rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| unreachable!("no `{name}` check in:\n{}", out.all()))
}

#[tokio::test]
async fn a_good_token_verifies() {
    let out = inspect_fully(&crate::support::tokens::token(ISSUER).build()).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("\nresult: verified"), "{}", out.all());
    assert_eq!(check_line(&out, "crit").trim(), "ok    crit");
}

#[tokio::test]
async fn unsupported_header_parameters_are_refused_as_the_server_does() {
    for (name, value) in [
        ("crit", json!(["exp"])),
        ("crit", json!([])),
        ("b64", json!(false)),
        ("zip", json!("DEF")),
    ] {
        let token = crate::support::tokens::token(ISSUER)
            .header(name, value.clone())
            .build();
        let out = inspect_fully(&token).await;
        assert_eq!(
            out.code,
            Some(EXIT_REFUSED),
            "{name}: {value}\n{}",
            out.all()
        );
        assert_eq!(
            check_line(&out, name).trim(),
            format!("FAIL  {name}: token is malformed: {name} header parameter is not supported"),
            "{value}"
        );
        assert!(
            out.stdout.contains("\nresult: NOT verified"),
            "{}",
            out.all()
        );
        // The signature itself is fine: only the parameter refuses the token.
        assert_eq!(check_line(&out, "signature").trim(), "ok    signature");
    }
}

#[tokio::test]
async fn an_over_long_kid_is_refused_as_the_server_does() {
    let token = crate::support::tokens::token(ISSUER)
        .header("kid", "k".repeat(257))
        .build();
    let out = inspect_fully(&token).await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert_eq!(
        check_line(&out, "kid_length").trim(),
        "FAIL  kid_length: token is malformed: kid too long"
    );
    let json_out = inspect(
        &token,
        &[
            "--issuer",
            ISSUER,
            "--audience",
            AUDIENCE,
            "--format",
            "json",
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(report["result"], "refused", "{report}");
    assert_eq!(report["verified"], false, "{report}");
}

#[tokio::test]
async fn without_issuer_and_audience_they_are_not_checked_and_not_claimed() {
    let out = inspect(&crate::support::tokens::token(ISSUER).build(), &[]).await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert_eq!(
        check_line(&out, "iss").trim(),
        "--    iss: not checked: no issuer given"
    );
    assert_eq!(
        check_line(&out, "aud").trim(),
        "--    aud: not checked: no audience given"
    );
    assert!(
        !out.stdout.contains("result: verified"),
        "claims full verification:\n{}",
        out.all()
    );
    assert!(
        out.stdout.contains(
            "\nresult: NOT fully verified: issuer_trusted, iss, aud not checked (give --issuer and --audience); every other check passed"
        ),
        "{}",
        out.all()
    );
    // Only the audience missing: the issuer is checked, the audience is not.
    let out = inspect(
        &crate::support::tokens::token(ISSUER).build(),
        &["--issuer", ISSUER],
    )
    .await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert_eq!(check_line(&out, "iss").trim(), "ok    iss");
    assert!(
        out.stdout
            .contains("result: NOT fully verified: aud not checked"),
        "{}",
        out.all()
    );
}
