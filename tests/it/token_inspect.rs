//! `token inspect` runs the server's verification pipeline offline: it
//! refuses what the server refuses, and says what it did not check. Each
//! report is compared whole with a reviewed snapshot
//! (`snapshots/it__token_inspect__*.snap`, see `cli_output`).

use insta::assert_snapshot;
use serde_json::json;

use crate::cli_output::{pretty_json, redactions, render};
use crate::support::KEY_A;
use crate::support::broker::{RunOutput, run_to_completion};
use crate::support::tokens::{AUDIENCE, TokenBuilder};

const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Exit code of a token that does not verify (or was not fully checked).
const EXIT_REFUSED: i32 = 1;

/// Issue time of the test tokens (2023-11-14T22:13:20Z), and the time they
/// are inspected at: fixed, so that a report is the same on every run.
const IAT: i64 = 1_700_000_000;
const AT: &str = "1700000060";

/// A token as GitHub would mint it for a push to main, at [`IAT`].
fn token() -> TokenBuilder {
    crate::support::tokens::token(ISSUER)
        .issued_at(IAT)
        .claim("jti", "5a3f9c1e-0000-4000-8000-000000000002")
}

/// Runs `token inspect TOKEN --jwks FILE --at AT` (KEY_A published) plus `extra`.
async fn inspect(token: &str, extra: &[&str]) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token.jwt");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&token_path, token).unwrap();
    std::fs::write(&jwks_path, json!({"keys": [KEY_A.jwk()]}).to_string()).unwrap();
    let token_arg = token_path.display().to_string();
    let jwks_arg = jwks_path.display().to_string();
    let mut args = vec![
        "token", "inspect", &token_arg, "--jwks", &jwks_arg, "--at", AT,
    ];
    args.extend_from_slice(extra);
    run_to_completion(&args, &[]).await
}

/// With the issuer and audience to check, as the server has them.
async fn inspect_fully(token: &str) -> RunOutput {
    inspect(token, &["--issuer", ISSUER, "--audience", AUDIENCE]).await
}

fn snapshot(out: &RunOutput) -> String {
    render(out.code, &out.stdout, &out.stderr)
}

#[tokio::test]
async fn a_good_token_verifies() {
    let _redact = redactions();
    let out = inspect_fully(&token().build()).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_snapshot!("verified", snapshot(&out));
}

#[tokio::test]
async fn unsupported_header_parameters_are_refused_as_the_server_does() {
    let _redact = redactions();
    for (case, name, value) in [
        ("crit", "crit", json!(["exp"])),
        ("crit_empty", "crit", json!([])),
        ("b64", "b64", json!(false)),
        ("zip", "zip", json!("DEF")),
    ] {
        let token = token().header(name, value.clone()).build();
        let out = inspect_fully(&token).await;
        assert_eq!(
            out.code,
            Some(EXIT_REFUSED),
            "{name}: {value}\n{}",
            out.all()
        );
        // `FAIL  NAME: token is malformed: NAME header parameter is not
        // supported`, while the signature itself checks out.
        assert_snapshot!(format!("refused_header_{case}"), snapshot(&out));
    }
}

#[tokio::test]
async fn an_over_long_kid_is_refused_as_the_server_does() {
    let _redact = redactions();
    let token = token().header("kid", "k".repeat(257)).build();
    let out = inspect_fully(&token).await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert_snapshot!("refused_long_kid", snapshot(&out));
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
    assert_eq!(json_out.code, Some(EXIT_REFUSED), "{}", json_out.all());
    assert_snapshot!(
        "refused_long_kid_json",
        render(
            json_out.code,
            &pretty_json(&json_out.stdout),
            &json_out.stderr
        )
    );
}

#[tokio::test]
async fn without_issuer_and_audience_they_are_not_checked_and_not_claimed() {
    let _redact = redactions();
    let out = inspect(&token().build(), &[]).await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert!(
        !out.stdout.contains("result: verified"),
        "claims full verification:\n{}",
        out.all()
    );
    assert_snapshot!("not_fully_verified", snapshot(&out));
    // Only the audience missing: the issuer is checked, the audience is not.
    let out = inspect(&token().build(), &["--issuer", ISSUER]).await;
    assert_eq!(out.code, Some(EXIT_REFUSED), "{}", out.all());
    assert_snapshot!("audience_not_checked", snapshot(&out));
}
