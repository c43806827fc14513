//! How the stand-in answers: routing, App JWT checks, faults, conditional
//! requests, and the bodies, built from GitHub's own examples (the JSON
//! files beside this one) with the configured values set in.

use crate::http::issue::rfc3339;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::super::{lock, random_string};
use super::{
    APP_ID, APP_SLUG, CLIENT_ID, CheckRunSpec, Exchange, FAKE_TOKEN_PREFIX, GithubFault, Inner,
    PullSpec, RATE_LIMIT, ReviewSpec, TokenState,
};
use crate::api::{Access, Permissions};
use crate::github::Operation;

/// GitHub's documentation link in error bodies.
const DOCS: &str = "https://docs.github.com/rest";

const APP_TEMPLATE: &str = include_str!("app.json");
const INSTALLATION_TEMPLATE: &str = include_str!("installation.json");
const ACCESS_TOKEN_TEMPLATE: &str = include_str!("access_token.json");
const REPOSITORY_TEMPLATE: &str = include_str!("repository.json");
const CHECK_RUN_TEMPLATE: &str = include_str!("check_run.json");
const PULL_SIMPLE_TEMPLATE: &str = include_str!("pull_simple.json");
const PULL_TEMPLATE: &str = include_str!("pull.json");
const REVIEW_TEMPLATE: &str = include_str!("review.json");

fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Sets `value[path…] = new` when every step exists.
fn set(value: &mut Value, path: &[&str], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for step in parents {
        match at.get_mut(*step) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(object) = at.as_object_mut() {
        object.insert((*last).to_owned(), new);
    }
}

fn error_body(message: &str, status: StatusCode) -> Value {
    json!({
        "message": message,
        "documentation_url": DOCS,
        "status": status.as_u16().to_string(),
    })
}

/// What the router understood of a request.
struct Route {
    operation: Operation,
    owner: String,
    repo: String,
    rest: Vec<String>,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_encoding_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let plain = |operation| Route {
        operation,
        owner: String::new(),
        repo: String::new(),
        rest: Vec::new(),
    };
    let repo = |operation, owner: &str, repo: &str, rest: &[&str]| Route {
        operation,
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        rest: rest.iter().map(|part| (*part).to_owned()).collect(),
    };
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["app"]) => Some(plain(Operation::App)),
        ("POST", ["app", "installations", id, "access_tokens"]) => Some(Route {
            rest: vec![(*id).to_owned()],
            ..plain(Operation::AccessToken)
        }),
        ("DELETE", ["installation", "token"]) => Some(plain(Operation::Revoke)),
        ("GET", ["repos", owner, name, "installation"]) => {
            Some(repo(Operation::Installation, owner, name, &[]))
        }
        ("GET", ["repos", owner, name, "commits", sha, "check-runs"]) => {
            Some(repo(Operation::CheckRuns, owner, name, &[sha]))
        }
        ("GET", ["repos", owner, name, "commits", sha, "pulls"]) => {
            Some(repo(Operation::CommitPulls, owner, name, &[sha]))
        }
        ("GET", ["repos", owner, name, "pulls", number]) => {
            Some(repo(Operation::Pull, owner, name, &[number]))
        }
        ("GET", ["repos", owner, name, "pulls", number, "reviews"]) => {
            Some(repo(Operation::Reviews, owner, name, &[number]))
        }
        _ => None,
    }
}

fn percent_encoding_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// An answer being built: status, body, extra headers.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn error(status: StatusCode, message: &str) -> Self {
        Self::json(status, error_body(message, status))
    }
}

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = route(&method, uri.path());
    let index = {
        let mut exchanges = lock(&inner.exchanges);
        exchanges.push(Exchange {
            operation: route.as_ref().map(|route| route.operation),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            status: 0,
            response: None,
        });
        exchanges.len() - 1
    };
    let reply = match &route {
        None => Reply::error(StatusCode::NOT_FOUND, "Not Found"),
        Some(route) => match fault(&inner, route.operation) {
            Some(GithubFault::Hang) => std::future::pending().await,
            Some(fault) => fault_reply(fault),
            None => answer(&inner, route, &headers, &body, uri.query()),
        },
    };
    // Conditional requests: a 304 when the ETag matches, without the body.
    let etag = reply
        .body
        .as_ref()
        .filter(|_| reply.status == StatusCode::OK && method == Method::GET)
        .map(|body| {
            let digest = Sha256::digest(body.to_string().as_bytes());
            format!(
                "W/\"{}\"",
                hex::encode(digest.get(..16).unwrap_or_default())
            )
        });
    let not_modified = etag.as_ref().is_some_and(|etag| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|sent| sent == etag)
    });
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, None)
    } else {
        (reply.status, reply.body)
    };
    if !not_modified {
        inner.remaining.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(exchange) = lock(&inner.exchanges).get_mut(index) {
        exchange.status = status.as_u16();
        exchange.response.clone_from(&body);
    }
    let mut response = match &body {
        Some(body) => (status, axum::Json(body.clone())).into_response(),
        None => status.into_response(),
    };
    let out = response.headers_mut();
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let mut set_header = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set_header("x-github-request-id", format!("FAKE:{id:X}:DEV"));
    set_header("x-ratelimit-limit", RATE_LIMIT.to_string());
    set_header("x-ratelimit-reset", (now_unix() + 3600).to_string());
    let mut remaining = inner.remaining.load(Ordering::Relaxed).max(0).to_string();
    for (name, value) in reply.headers {
        if name == "x-ratelimit-remaining" {
            remaining = value;
        } else {
            set_header(name, value);
        }
    }
    set_header("x-ratelimit-remaining", remaining);
    if let Some(etag) = etag {
        set_header("etag", etag);
    }
    response
}

fn fault(inner: &Inner, operation: Operation) -> Option<GithubFault> {
    let queued = lock(&inner.queued)
        .get_mut(&operation)
        .and_then(VecDeque::pop_front);
    queued.or_else(|| lock(&inner.standing).get(&operation).copied())
}

fn fault_reply(fault: GithubFault) -> Reply {
    match fault {
        GithubFault::ServerError | GithubFault::Hang => {
            Reply::error(StatusCode::BAD_GATEWAY, "Server Error")
        }
        GithubFault::SecondaryRateLimit { retry_after } => {
            let mut reply = Reply::error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            reply.headers.push(("retry-after", retry_after.to_string()));
            reply
        }
        GithubFault::PrimaryRateLimit => {
            let mut reply = Reply::error(StatusCode::FORBIDDEN, "API rate limit exceeded");
            reply
                .headers
                .push(("x-ratelimit-remaining", "0".to_owned()));
            reply
        }
        GithubFault::Unprocessable => Reply::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "documentation_url": DOCS, "errors": [{"code": "invalid"}]}),
        ),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Whether the request carries a valid App JWT.
fn app_authenticated(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(jwt) = bearer(headers) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID.to_string().as_str(), CLIENT_ID]);
    validation.leeway = 0;
    let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &inner.decoding, &validation) else {
        return false;
    };
    let claim = |name: &str| data.claims.get(name).and_then(Value::as_u64);
    match (claim("iat"), claim("exp")) {
        // GitHub: at most ten minutes of life, not issued in the future.
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 600 && iat <= now_unix() + 60,
        _ => false,
    }
}

fn answer(
    inner: &Inner,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    query: Option<&str>,
) -> Reply {
    let app_operation = matches!(
        route.operation,
        Operation::App | Operation::Installation | Operation::AccessToken
    );
    if app_operation && !app_authenticated(inner, headers) {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    match route.operation {
        Operation::App => app(inner),
        Operation::Installation => installation(inner, route),
        Operation::AccessToken => access_token(inner, route, body),
        Operation::Revoke => revoke(inner, headers),
        Operation::CheckRuns | Operation::CommitPulls | Operation::Pull | Operation::Reviews => {
            repository_data(inner, route, headers, query)
        }
    }
}

fn permissions_json(permissions: &Permissions) -> Value {
    Value::Object(
        permissions
            .iter()
            .map(|(name, access)| (name.clone(), Value::from(access.as_str())))
            .collect(),
    )
}

fn app(inner: &Inner) -> Reply {
    let mut body = template(APP_TEMPLATE);
    set(&mut body, &["id"], json!(APP_ID));
    set(&mut body, &["slug"], json!(APP_SLUG));
    set(&mut body, &["client_id"], json!(CLIENT_ID));
    set(
        &mut body,
        &["name"],
        json!("attestation-broker (development stand-in)"),
    );
    set(
        &mut body,
        &["permissions"],
        permissions_json(&lock(&inner.permissions)),
    );
    Reply::json(StatusCode::OK, body)
}

fn installation(inner: &Inner, route: &Route) -> Reply {
    let installations = lock(&inner.installations);
    let Some(found) = installations
        .get(&route.owner.to_ascii_lowercase())
        .filter(|found| {
            found
                .repositories
                .contains(&route.repo.to_ascii_lowercase())
        })
    else {
        return Reply::error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut body = template(INSTALLATION_TEMPLATE);
    set(&mut body, &["id"], json!(found.id));
    set(&mut body, &["app_id"], json!(APP_ID));
    set(&mut body, &["app_slug"], json!(APP_SLUG));
    set(&mut body, &["account", "login"], json!(found.owner));
    set(&mut body, &["repository_selection"], json!("selected"));
    set(
        &mut body,
        &["permissions"],
        permissions_json(&lock(&inner.permissions)),
    );
    Reply::json(StatusCode::OK, body)
}

fn access_token(inner: &Inner, route: &Route, body: &[u8]) -> Reply {
    let id: u64 = route
        .rest
        .first()
        .and_then(|id| id.parse().ok())
        .unwrap_or(0);
    let Some(found) = lock(&inner.installations)
        .values()
        .find(|found| found.id == id)
        .cloned()
    else {
        return Reply::error(StatusCode::NOT_FOUND, "Not Found");
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(_) => return Reply::error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let refused = |message: &str| {
        Reply::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": message, "documentation_url": DOCS}),
        )
    };
    let repositories: BTreeSet<String> = match request.get("repositories") {
        None => found.repositories.clone(),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect(),
        Some(_) => return refused("repositories must be an array"),
    };
    if repositories
        .iter()
        .any(|name| !found.repositories.contains(name))
    {
        return refused(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        );
    }
    let granted = lock(&inner.permissions).clone();
    let permissions: Permissions = match request.get("permissions") {
        None => granted.clone(),
        Some(Value::Object(asked)) => {
            let mut permissions = Permissions::new();
            for (name, level) in asked {
                let access = match level.as_str() {
                    Some("read") => Access::Read,
                    Some("write") => Access::Write,
                    Some("admin") => Access::Admin,
                    _ => return refused("The permissions requested are not valid."),
                };
                permissions.insert(name.clone(), access);
            }
            permissions
        }
        Some(_) => return refused("permissions must be an object"),
    };
    if permissions
        .iter()
        .any(|(name, level)| granted.get(name).is_none_or(|have| have < level))
    {
        return refused("The permissions requested are not granted to this installation.");
    }
    let token = format!(
        "{FAKE_TOKEN_PREFIX}_{}",
        random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            28
        )
    );
    // The broker's internal read-only tokens ask exactly checks + pull_requests read.
    let internal_only = permissions.len() == 2
        && permissions.get("checks") == Some(&Access::Read)
        && permissions.get("pull_requests") == Some(&Access::Read);
    lock(&inner.tokens).insert(
        token.clone(),
        TokenState {
            owner: found.owner.to_ascii_lowercase(),
            repositories: repositories.clone(),
            permissions: permissions.clone(),
            revoked: false,
            internal_only,
        },
    );
    let mut body = template(ACCESS_TOKEN_TEMPLATE);
    set(&mut body, &["token"], json!(token));
    set(
        &mut body,
        &["expires_at"],
        json!(rfc3339(SystemTime::now() + Duration::from_secs(3600))),
    );
    set(&mut body, &["permissions"], permissions_json(&permissions));
    set(&mut body, &["repository_selection"], json!("selected"));
    let repository_bodies: Vec<Value> = repositories
        .iter()
        .map(|name| {
            let mut repository = template(REPOSITORY_TEMPLATE);
            set(&mut repository, &["name"], json!(name));
            set(
                &mut repository,
                &["full_name"],
                json!(format!("{}/{name}", found.owner)),
            );
            set(&mut repository, &["owner", "login"], json!(found.owner));
            repository
        })
        .collect();
    set(
        &mut body,
        &["repositories"],
        Value::Array(repository_bodies),
    );
    Reply::json(StatusCode::CREATED, body)
}

fn revoke(inner: &Inner, headers: &HeaderMap) -> Reply {
    let mut tokens = lock(&inner.tokens);
    match bearer(headers).and_then(|token| tokens.get_mut(token)) {
        Some(state) if !state.revoked => {
            state.revoked = true;
            Reply {
                status: StatusCode::NO_CONTENT,
                body: None,
                headers: Vec::new(),
            }
        }
        _ => Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

fn repository_data(
    inner: &Inner,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Reply {
    let owner = route.owner.to_ascii_lowercase();
    let name = route.repo.to_ascii_lowercase();
    let needed = match route.operation {
        Operation::CheckRuns => "checks",
        _ => "pull_requests",
    };
    {
        let tokens = lock(&inner.tokens);
        let Some(state) = bearer(headers)
            .and_then(|token| tokens.get(token))
            .filter(|state| !state.revoked)
        else {
            return Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials");
        };
        if state.owner != owner
            || !state.repositories.contains(&name)
            || !state.permissions.contains_key(needed)
        {
            return Reply::error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            );
        }
    }
    let repo = format!("{owner}/{name}");
    let param = |key: &str| {
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.into_owned())
    };
    let first = route.rest.first().cloned().unwrap_or_default();
    match route.operation {
        Operation::CheckRuns => {
            let runs = lock(&inner.check_runs)
                .get(&(repo.clone(), first.clone()))
                .cloned()
                .unwrap_or_default();
            let wanted = param("check_name");
            let latest_only = param("filter").as_deref() != Some("all");
            let mut listed: Vec<(usize, &CheckRunSpec)> = runs
                .iter()
                .enumerate()
                .filter(|(_, run)| wanted.as_ref().is_none_or(|name| *name == run.name))
                .collect();
            if latest_only {
                // GitHub's `latest`: the most recent run per name and App.
                let mut seen = BTreeSet::new();
                listed.reverse();
                listed.retain(|(_, run)| seen.insert((run.name.clone(), run.app_slug.clone())));
                listed.reverse();
            }
            let bodies: Vec<Value> = listed
                .iter()
                .map(|(index, run)| check_run_body(&repo, &first, *index, run))
                .collect();
            Reply::json(
                StatusCode::OK,
                json!({"total_count": bodies.len(), "check_runs": bodies}),
            )
        }
        Operation::CommitPulls => {
            let numbers = lock(&inner.commit_pulls)
                .get(&(repo.clone(), first))
                .cloned()
                .unwrap_or_default();
            let pulls = lock(&inner.pulls);
            let bodies: Vec<Value> = numbers
                .iter()
                .filter_map(|number| pulls.get(&(repo.clone(), *number)))
                .map(|pull| pull_body(PULL_SIMPLE_TEMPLATE, &repo, pull))
                .collect();
            Reply::json(StatusCode::OK, Value::Array(bodies))
        }
        Operation::Pull => {
            let number: u64 = first.parse().unwrap_or(0);
            match lock(&inner.pulls).get(&(repo.clone(), number)) {
                Some(pull) => Reply::json(StatusCode::OK, pull_body(PULL_TEMPLATE, &repo, pull)),
                None => Reply::error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => {
            let number: u64 = first.parse().unwrap_or(0);
            if !lock(&inner.pulls).contains_key(&(repo.clone(), number)) {
                return Reply::error(StatusCode::NOT_FOUND, "Not Found");
            }
            let reviews = lock(&inner.reviews)
                .get(&(repo.clone(), number))
                .cloned()
                .unwrap_or_default();
            let per_page: usize = param("per_page")
                .and_then(|value| value.parse().ok())
                .unwrap_or(30)
                .clamp(1, 100);
            let page: usize = param("page")
                .and_then(|value| value.parse().ok())
                .unwrap_or(1)
                .max(1);
            let bodies: Vec<Value> = reviews
                .iter()
                .enumerate()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(index, review)| review_body(&repo, number, index, review))
                .collect();
            Reply::json(StatusCode::OK, Value::Array(bodies))
        }
    }
}

fn check_run_body(repo: &str, sha: &str, index: usize, run: &CheckRunSpec) -> Value {
    let mut body = template(CHECK_RUN_TEMPLATE);
    set(&mut body, &["id"], json!(index + 1));
    set(&mut body, &["name"], json!(run.name));
    set(&mut body, &["head_sha"], json!(sha));
    set(&mut body, &["status"], json!(run.status));
    set(&mut body, &["conclusion"], json!(run.conclusion));
    if run.conclusion.is_none() {
        set(&mut body, &["completed_at"], Value::Null);
    }
    set(&mut body, &["app", "slug"], json!(run.app_slug));
    set(
        &mut body,
        &["url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/check-runs/{}",
            index + 1
        )),
    );
    body
}

fn user_fields(body: &mut Value, path: &[&str], (id, login): &(u64, String)) {
    let mut id_path = path.to_vec();
    id_path.push("id");
    set(body, &id_path, json!(id));
    let mut login_path = path.to_vec();
    login_path.push("login");
    set(body, &login_path, json!(login));
}

fn pull_body(template_text: &str, repo: &str, pull: &PullSpec) -> Value {
    let mut body = template(template_text);
    set(&mut body, &["number"], json!(pull.number));
    set(&mut body, &["id"], json!(pull.number + 100_000));
    user_fields(&mut body, &["user"], &pull.author);
    set(&mut body, &["head", "sha"], json!(pull.head_sha));
    set(
        &mut body,
        &["merge_commit_sha"],
        json!(pull.merge_commit_sha),
    );
    set(
        &mut body,
        &["state"],
        json!(if pull.merged { "closed" } else { "open" }),
    );
    let merged_at = pull.merged.then_some("2026-11-20T10:00:00Z");
    set(&mut body, &["merged_at"], json!(merged_at));
    set(&mut body, &["merged"], json!(pull.merged));
    set(
        &mut body,
        &["url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/pulls/{}",
            pull.number
        )),
    );
    body
}

fn review_body(repo: &str, number: u64, index: usize, review: &ReviewSpec) -> Value {
    let mut body = template(REVIEW_TEMPLATE);
    set(&mut body, &["id"], json!(index + 1));
    user_fields(&mut body, &["user"], &review.reviewer);
    set(&mut body, &["state"], json!(review.state));
    set(&mut body, &["commit_id"], json!(review.commit_id));
    set(
        &mut body,
        &["pull_request_url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/pulls/{number}"
        )),
    );
    body
}
