//! The dev peers over real loopback HTTP: tokens checked with `jsonwebtoken`
//! against the served JWKS, fake credentials parsed by the real STS client.

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::*;
use crate::config::StsConfig;
use crate::decision::AwsSession;
use crate::metrics::Metrics;
use crate::sts::StsClient;
use crate::testkit::ensure_loopback;

const AUDIENCE: &str = "https://github.com/dev";

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// Fetches the JWKS over HTTP and verifies `jwt` against it, as the broker would.
/// `GET url` with the runtime's request token, as a job's step sends it.
async fn get_with_runtime_token(issuer: &DevIssuerHandle, url: &str) -> reqwest::Response {
    http()
        .get(url)
        .bearer_auth(issuer.issuer().request_token())
        .send()
        .await
        .unwrap()
}

async fn verify(issuer: &DevIssuerHandle, jwt: &str, audience: &str) -> Value {
    let (status, discovery) = get_json(&format!(
        "{}/.well-known/openid-configuration",
        issuer.issuer_url()
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(discovery["issuer"], issuer.issuer_url());
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, issuer.jwks_url());

    let (status, jwks) = get_json(jwks_uri).await;
    assert_eq!(status, 200);
    let jwks: JwkSet = serde_json::from_value(jwks).unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.unwrap();
    assert_eq!(kid, issuer.issuer().kid());
    let jwk = jwks.find(&kid).unwrap();
    let key = DecodingKey::from_jwk(jwk).unwrap();

    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer.issuer_url()]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn minted_token_verifies_against_the_served_jwks() {
    let issuer = DevIssuer::start(loopback().await, AUDIENCE.to_owned())
        .await
        .unwrap();
    assert!(issuer.issuer_url().starts_with("http://127.0.0.1:"));

    let url = format!("{}?repository=octo-org/octo-repo", issuer.token_url());
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let jwt = body["value"].as_str().unwrap();

    let claims = verify(&issuer, jwt, AUDIENCE).await;
    assert_eq!(claims["iss"], issuer.issuer_url());
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], "repo:octo-org/octo-repo:ref:refs/heads/main");
    assert_eq!(claims["repository"], "octo-org/octo-repo");
    assert_eq!(claims["repository_owner"], "octo-org");
    assert_eq!(
        claims["repository_id"],
        dev_repository_id("octo-org/octo-repo")
    );
    assert_eq!(claims["repository_owner_id"], dev_owner_id("octo-org"));
    assert_eq!(claims["ref"], "refs/heads/main");
    assert_eq!(claims["ref_type"], "branch");
    assert_eq!(claims["ref_protected"], "true");
    assert_eq!(claims["event_name"], "push");
    assert_eq!(claims["run_attempt"], "1");
    assert_eq!(claims["actor"], DEV_ACTOR);
    assert_eq!(claims["runner_environment"], "github-hosted");
    assert_eq!(
        claims["job_workflow_ref"],
        "octo-org/octo-repo/.github/workflows/dev.yml@refs/heads/main"
    );
    let sha = claims["sha"].as_str().unwrap();
    assert_eq!(sha.len(), 40);
    assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));
    for name in ["run_id", "run_number", "check_run_id"] {
        let value = claims[name].as_str().unwrap();
        assert!(
            !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()),
            "{name}"
        );
    }
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert!(claims.get("environment").is_none());

    issuer.shutdown();
}

#[tokio::test]
async fn token_parameters_shape_the_claims() {
    let issuer = DevIssuer::start(loopback().await, AUDIENCE.to_owned())
        .await
        .unwrap();
    let url = format!(
        "{}?repository=Octo/Repo&ref=refs%2Ftags%2Fv1&event_name=workflow_dispatch\
         &audience=sts.amazonaws.com&environment=production",
        issuer.token_url()
    );
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200);

    let claims = verify(
        &issuer,
        body["value"].as_str().unwrap(),
        "sts.amazonaws.com",
    )
    .await;
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["sub"], "repo:Octo/Repo:environment:production");
    assert_eq!(claims["ref"], "refs/tags/v1");
    assert_eq!(claims["ref_type"], "tag");
    assert_eq!(claims["event_name"], "workflow_dispatch");
    assert_eq!(claims["environment"], "production");
    assert_eq!(claims["repository_id"], dev_repository_id("octo/repo"));
    assert_eq!(
        claims["job_workflow_ref"],
        "Octo/Repo/.github/workflows/dev.yml@refs/tags/v1"
    );
}

#[tokio::test]
async fn minting_without_http_matches_the_endpoint() {
    let issuer = DevIssuer::start(loopback().await, AUDIENCE.to_owned())
        .await
        .unwrap();
    let jwt = issuer.mint(&TokenRequest::new("octo/repo")).unwrap();
    let claims = verify(&issuer, &jwt, AUDIENCE).await;
    assert_eq!(claims["repository"], "octo/repo");

    // Every token is a new job: a fresh jti and run.
    let other = issuer.mint(&TokenRequest::new("octo/repo")).unwrap();
    let other = verify(&issuer, &other, AUDIENCE).await;
    assert_ne!(claims["jti"], other["jti"]);
}

#[tokio::test]
async fn bad_token_requests_are_400() {
    let issuer = DevIssuer::start(loopback().await, AUDIENCE.to_owned())
        .await
        .unwrap();
    let long = format!("owner/{}", "x".repeat(100));
    for query in [
        String::new(),
        "?repository=noslash".to_owned(),
        "?repository=a/b/c".to_owned(),
        "?repository=a%20b/c".to_owned(),
        "?repository=/name".to_owned(),
        format!("?repository={long}"),
        "?repository=o/r&event_name=push%3B".to_owned(),
        "?repository=o/r&ref=".to_owned(),
        "?repository=o/r&ref=a%0Ab".to_owned(),
        "?repository=o/r&unknown=1".to_owned(),
    ] {
        let (status, body) = get_json(&format!("{}{query}", issuer.token_url())).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "invalid_request", "{query}");
        assert!(body.get("value").is_none());
    }
}

#[tokio::test]
async fn the_actions_endpoint_wants_the_request_token_and_mints_the_job_asked_for() {
    let issuer = DevIssuer::start(loopback().await, AUDIENCE.to_owned())
        .await
        .unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    // As `fetch` calls it: ACTIONS_ID_TOKEN_REQUEST_URL plus `&audience=`.
    let url = format!(
        "{}?api-version=2.0&repository=octo-org/demo&sha={sha}&check_run_id=4242&audience=aud-x",
        issuer.actions_token_url()
    );
    for bearer in [None, Some("wrong"), Some("")] {
        let mut request = http().get(&url);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{bearer:?}");
        let text = response.text().await.unwrap();
        assert!(!text.contains("value"), "{text}");
    }
    let response = get_with_runtime_token(&issuer, &url).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let claims = verify(&issuer, body["value"].as_str().unwrap(), "aud-x").await;
    assert_eq!(claims["repository"], "octo-org/demo");
    assert_eq!(claims["sha"], sha);
    assert_eq!(claims["workflow_sha"], sha);
    assert_eq!(claims["check_run_id"], "4242");

    // The same checks as /token.
    let bad = format!(
        "{}?api-version=2.0&repository=octo-org/demo&sha=XYZ",
        issuer.actions_token_url()
    );
    let response = get_with_runtime_token(&issuer, &bad).await;
    assert_eq!(response.status().as_u16(), 400);
}

#[test]
fn only_loopback_addresses_are_served() {
    let public = SocketAddr::from(([192, 0, 2, 1], 8080));
    assert!(matches!(
        ensure_loopback(public).map_err(DevError::from),
        Err(DevError::NotLoopback(_))
    ));
    let any = SocketAddr::from(([0, 0, 0, 0], 8080));
    assert!(ensure_loopback(any).is_err());
    assert!(ensure_loopback(SocketAddr::from(([127, 0, 0, 1], 1))).is_ok());
    assert!(ensure_loopback("[::1]:1".parse().unwrap()).is_ok());
}

async fn sts_client(endpoint: &url::Url) -> StsClient {
    let config = StsConfig {
        endpoint_url: Some(endpoint.clone()),
        ..StsConfig::default()
    };
    StsClient::new(&config, Some(dev_credentials()), Metrics::new().unwrap())
        .await
        .unwrap()
}

fn job_claims() -> Vec<(&'static str, &'static str)> {
    vec![
        ("repository", "octo/repo"),
        ("ref", "refs/heads/main"),
        ("run_id", "4242"),
        ("run_attempt", "1"),
        ("check_run_id", "777"),
    ]
}

#[tokio::test]
async fn fake_sts_answers_the_real_client() {
    let sts = FakeSts::start(loopback().await).await.unwrap();
    let client = sts_client(sts.url()).await;

    let before = SystemTime::now();
    let issued = client
        .assume_role(
            "test",
            &AwsSession::for_tests(
                "arn:aws:iam::123456789012:role/deploy",
                900,
                true,
                &job_claims(),
            ),
        )
        .await
        .unwrap();

    assert!(issued.access_key_id.starts_with(FAKE_ACCESS_KEY_PREFIX));
    assert_eq!(issued.access_key_id.len(), 20);
    assert!(
        issued
            .secret_access_key
            .expose_secret()
            .starts_with(FAKE_SECRET_PREFIX)
    );
    assert!(
        issued
            .session_token
            .expose_secret()
            .starts_with(FAKE_SESSION_TOKEN_PREFIX)
    );
    assert_eq!(issued.session_name, "gh-4242-1-777");
    // Whole seconds in the answer: allow the truncation, not a timing threshold.
    assert!(issued.expiration >= before + Duration::from_secs(899));
    assert!(issued.expiration <= SystemTime::now() + Duration::from_secs(900));
    assert_eq!(sts.assume_role_calls(), 1);

    sts.shutdown();
}

async fn post_form(url: &url::Url, body: &str, signed: bool) -> (u16, String) {
    let mut request = http()
        .post(url.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if signed {
        request = request.header("authorization", "AWS4-HMAC-SHA256 Credential=x");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn fake_sts_rejects_what_sts_would() {
    let sts = FakeSts::start(loopback().await).await.unwrap();
    let assume = "Action=AssumeRole&Version=2011-06-15\
                  &RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx&RoleSessionName=gh-1";

    // (form, signed, status, text of the answer)
    let cases = [
        (
            "Action=GetCallerIdentity&Version=2011-06-15".to_owned(),
            true,
            400,
            "<Code>InvalidAction</Code>",
        ),
        (
            assume.to_owned(),
            false,
            403,
            "<Code>MissingAuthenticationToken</Code>",
        ),
        (
            format!("{assume}&DurationSeconds=60"),
            true,
            400,
            "<Code>ValidationError</Code>",
        ),
        (
            "Action=AssumeRole&RoleArn=x&RoleSessionName=gh".to_owned(),
            true,
            400,
            "<Code>ValidationError</Code>",
        ),
        (
            assume.to_owned(),
            true,
            200,
            "<Arn>arn:aws:sts::1:assumed-role/x/gh-1</Arn>",
        ),
    ];
    for (form, signed, status, text) in cases {
        let (answered, body) = post_form(sts.url(), &form, signed).await;
        assert_eq!(answered, status, "{form}: {body}");
        assert!(body.contains(text), "{form}: {body}");
    }
    assert_eq!(sts.assume_role_calls(), 1);
}
