//! The harness: loopback issuer, loopback STS, the real broker (the binary,
//! or its router in this process), and assertions on the broker's error
//! contract.

pub mod broker;
mod in_process;
pub mod jwks;
pub mod redis;
pub mod sts;
pub mod tokens;

use attestation_broker::api::IssueResponse;
use serde_json::{Value, json};

pub use broker::{Broker, BrokerSpec, Req, Resp};
pub use jwks::JwksServer;
pub use sts::StsServer;
pub use tokens::{KEY_A, KEY_B, TokenBuilder};

/// Whether an external tool a test needs is there. When it is not, the test
/// skips: this prints `skipped: TOOL not found (HINT)` past the test
/// harness's output capture, so a plain `cargo test` shows every skip. With
/// `BROKER_TEST_REQUIRE_ALL=1` (scripts/test.sh sets it) a missing tool fails
/// the test instead, so CI never skips silently.
pub fn tool_available(tool: &str, found: bool, hint: &str) -> bool {
    if found {
        return true;
    }
    let required = std::env::var("BROKER_TEST_REQUIRE_ALL").is_ok_and(|value| value == "1");
    assert!(
        !required,
        "{tool} not found and BROKER_TEST_REQUIRE_ALL=1 ({hint})"
    );
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let line = format!("skipped: {tool} not found ({hint}): {test}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// The role the default policy grants.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole";
/// Its account.
pub const ACCOUNT_ID: &str = "123456789012";

/// The default policy: `deploy` for pushes to main or release branches of
/// `ourorg` (by owner id), never on self-hosted runners.
pub const DEFAULT_POLICY: &str = r#"
[[roles]]
name = "deploy"
role_arn = "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole"
duration_seconds = 900

[[roles.allow]]
repository_owner_id = "1234567"
repository = "ourorg/*"
ref = ["refs/heads/main", "refs/heads/release/*"]
event_name = ["push", "workflow_dispatch"]

[[roles.deny]]
runner_environment = "self-hosted"
"#;

/// The broker's fixed error messages (docs/api.md, "Errors").
pub mod msg {
    pub const BAD_JSON: &str = "request body is not valid JSON of the expected shape";
    pub const NO_TOKEN: &str =
        "no OIDC token: send `oidc_token` or an `Authorization: Bearer` header";
    pub const AMBIGUOUS_ROLE: &str = "more than one role matches this token: name one in `role`";
    pub const BAD_DURATION: &str = "`duration_seconds` is outside the range this role allows";
    pub const FIELD_NOT_FOR_ROLE: &str =
        "`duration_seconds` is only for AWS roles and `permissions` only for GitHub roles";
    pub const TOO_LARGE: &str = "request body is too large";
    pub const NOT_JSON_TYPE: &str = "request body must be application/json";
    pub const MALFORMED: &str = "token is malformed";
    pub const BAD_SIGNATURE: &str = "token signature is invalid";
    pub const BAD_ALGORITHM: &str = "token algorithm is not accepted";
    pub const BAD_ISSUER: &str = "token issuer is not trusted";
    pub const BAD_AUDIENCE: &str = "token audience is not accepted";
    pub const EXPIRED: &str = "token has expired";
    pub const NOT_YET_VALID: &str = "token is not yet valid";
    pub const MISSING_CLAIM: &str = "token is missing a required claim";
    pub const FORBIDDEN: &str = "the token is not permitted to obtain credentials for this request";
    pub const UNAVAILABLE: &str = "credentials cannot be issued right now; retry later";
}

/// A loopback issuer serving [`KEY_A`], a loopback STS, and a broker using both.
pub struct Harness {
    /// The issuer.
    pub jwks: JwksServer,
    /// The STS stub.
    pub sts: StsServer,
    /// The broker.
    pub broker: Broker,
}

impl Harness {
    /// Default config and [`DEFAULT_POLICY`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Default config with `policy`.
    pub async fn with_policy(policy: &str) -> Self {
        let policy = policy.to_owned();
        Self::start_with(move |spec| spec.policy = policy).await
    }

    /// Default config and policy, edited by `edit` before the broker starts.
    pub async fn start_with(edit: impl FnOnce(&mut BrokerSpec)) -> Self {
        let jwks = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
        Self::start_with_issuer(jwks, edit).await
    }

    /// Like [`Harness::start_with`] with an issuer the test prepared.
    pub async fn start_with_issuer(jwks: JwksServer, edit: impl FnOnce(&mut BrokerSpec)) -> Self {
        let (jwks, sts, spec) = Self::peers(jwks, edit).await;
        let broker = Broker::start(&spec).await;
        Self { jwks, sts, broker }
    }

    /// Like [`Harness::start`], with the broker in this process
    /// ([`Broker::start_in_process`]): for tests of answers, metrics and
    /// audit events, where the binary adds nothing.
    pub async fn in_process() -> Self {
        let jwks = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
        let (jwks, sts, spec) = Self::peers(jwks, |_| {}).await;
        let broker = Broker::start_in_process(&spec).await;
        Self { jwks, sts, broker }
    }

    /// The STS stub, and the spec of a broker trusting `jwks` and calling it.
    async fn peers(
        jwks: JwksServer,
        edit: impl FnOnce(&mut BrokerSpec),
    ) -> (JwksServer, StsServer, BrokerSpec) {
        let sts = StsServer::start().await.unwrap();
        let mut spec = BrokerSpec::new(&jwks.issuer(), sts.url().as_str(), DEFAULT_POLICY);
        edit(&mut spec);
        (jwks, sts, spec)
    }

    /// A default token from this harness's issuer.
    pub fn token(&self) -> TokenBuilder {
        crate::support::tokens::token(&self.jwks.issuer())
    }

    /// Posts `{"oidc_token": token}` plus `extra` fields.
    pub async fn issue_token(&self, token: &str, extra: Value) -> Resp {
        let mut body = json!({ "oidc_token": token });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        self.broker.issue(&body).await
    }
}

/// Strings no error answer may contain: role ARN, account, key ids, and the
/// default token's distinctive claim values.
pub fn secrets_of_default_token() -> Vec<String> {
    [
        ROLE_ARN,
        ACCOUNT_ID,
        "GitHubActions-Lambda-DeployRole",
        KEY_A.kid,
        KEY_B.kid,
        tokens::REPOSITORY,
        "widget-service",
        tokens::REPOSITORY_ID,
        tokens::REPOSITORY_OWNER_ID,
        tokens::SHA,
        tokens::RUN_ID,
        tokens::CHECK_RUN_ID,
        tokens::ACTOR,
        tokens::ACTOR_ID,
        tokens::JOB_WORKFLOW_REF,
        "refs/heads",
        "github-hosted",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect()
}

/// Asserts that no part of `resp` (headers included) contains any of `forbidden`.
pub fn assert_no_leak(resp: &Resp, forbidden: &[String]) {
    let everything = resp.everything();
    for secret in forbidden {
        assert!(
            !secret.is_empty() && !everything.contains(secret.as_str()),
            "answer leaks {secret:?}:\n{everything}"
        );
    }
}

/// Asserts the exact error contract: status, JSON body `{error, message,
/// request_id}` and nothing else, `request_id` = `x-request-id`, and no leak
/// of the default token's values, the role ARN, the account or a key id.
pub fn assert_error(resp: &Resp, status: u16, code: &str, message: &str) {
    assert_eq!(
        resp.status,
        status,
        "unexpected status; body: {}",
        resp.text()
    );
    let request_id = resp.request_id();
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content-type {content_type:?}"
    );
    assert_eq!(
        resp.json(),
        json!({ "error": code, "message": message, "request_id": request_id })
    );
    assert_no_leak(resp, &secrets_of_default_token());
    if status == 503 || status == 429 {
        let retry_after = resp.header("retry-after").unwrap_or_default();
        assert!(
            retry_after.parse::<u64>().is_ok(),
            "{status} without a numeric Retry-After: {retry_after:?}"
        );
    }
}

/// [`assert_error`] for a 401 `invalid_token`.
pub fn assert_invalid_token(resp: &Resp, message: &str) {
    assert_error(resp, 401, "invalid_token", message);
}

/// [`assert_error`] for the generic 403.
pub fn assert_forbidden(resp: &Resp) {
    assert_error(resp, 403, "forbidden", msg::FORBIDDEN);
}

/// [`assert_error`] for a 400 `invalid_request`.
pub fn assert_bad_request(resp: &Resp, message: &str) {
    assert_error(resp, 400, "invalid_request", message);
}

/// [`assert_error`] for a 503 with Retry-After.
pub fn assert_unavailable(resp: &Resp) {
    assert_error(resp, 503, "unavailable", msg::UNAVAILABLE);
}

/// Asserts a 200 issuance and returns its body, read as the wire type (so
/// every required field is there and a string).
pub fn assert_issued(resp: &Resp) -> IssueResponse {
    assert_issued_as(resp)
}

/// [`assert_issued`] for another answer shape (`CredentialProcess`).
pub fn assert_issued_as<Answer: serde::de::DeserializeOwned>(resp: &Resp) -> Answer {
    assert_eq!(
        resp.status,
        200,
        "expected credentials; got: {}",
        resp.text()
    );
    resp.request_id();
    assert_no_leak(
        resp,
        &[
            ROLE_ARN.to_owned(),
            ACCOUNT_ID.to_owned(),
            KEY_A.kid.to_owned(),
            KEY_B.kid.to_owned(),
        ],
    );
    serde_json::from_slice(&resp.body).unwrap_or_else(|err| {
        unreachable!("a 200 that is not an issue answer ({err}): {}", resp.text())
    })
}
