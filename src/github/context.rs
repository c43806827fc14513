//! Answers to commit context conditions, asked of GitHub about the token's
//! own repository and commit.
//!
//! - `checks_passed`: `GET …/commits/{sha}/check-runs?check_name=NAME&filter=latest`;
//!   the latest matching run (by the named App only, when `app` is set)
//!   must be `completed` with conclusion `success`.
//! - `pull_request_approvals`: the pull request is the one the `ref` names
//!   for `pull_request` / `pull_request_target` events, else the merged pull
//!   request whose `merge_commit_sha` is the `sha`; per reviewer (by user id)
//!   the latest `APPROVED` / `CHANGES_REQUESTED` / `DISMISSED` review
//!   decides; an approval counts only on the head commit; the author never
//!   counts; a deciding `CHANGES_REQUESTED` blocks.
//!
//! Repository questions use an internal read-only installation token
//! (`checks: read`, `pull_requests: read`, this repository only), never
//! returned or logged, reused until a few minutes before it expires. Passed
//! answers are cached per (repository, sha, condition); failed and
//! unavailable ones never. Concurrent identical questions share one set of
//! GitHub calls. Anything that is not an answer (5xx, timeout, rate limit)
//! is `Unavailable`, never `Pass`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;

use super::call::{Operation, endpoint};
use super::{GithubClient, GithubError};
use crate::api::{Access, Permissions};
use crate::context::{Commit, ContextAnswer, ContextAnswers, ContextCondition, ContextSource};

/// Passed answers remembered at once.
const ANSWER_CACHE_ENTRIES: u64 = 100_000;
/// Conditional-request bodies remembered at once.
const ETAG_CACHE_ENTRIES: u64 = 10_000;
/// How long a conditional-request body is kept.
const ETAG_CACHE_TTL: Duration = Duration::from_secs(600);
/// Largest body kept for conditional requests.
const MAX_ETAG_BODY: usize = 1024 * 1024;
/// Read-only tokens remembered at once (one per repository asked about).
const READ_TOKEN_ENTRIES: u64 = 10_000;
/// A read-only token is replaced this long before GitHub expires it.
const READ_TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Entries per page of a list call.
const PER_PAGE: usize = 100;
/// Most pages of reviews read (1,000 reviews).
const MAX_REVIEW_PAGES: usize = 10;

/// The cache key of a passed answer.
type AnswerKey = (String, String, String, ContextCondition);

/// An answer and the request ids of the calls that produced it.
type Produced = (ContextAnswer, Vec<String>);

/// The caches of context answering.
pub(super) struct ContextCache {
    answers: moka::future::Cache<AnswerKey, Produced>,
    keep_passed: bool,
    etags: moka::sync::Cache<String, Arc<(String, Bytes)>>,
    read_tokens: moka::future::Cache<(u64, String), (SecretString, SystemTime)>,
}

impl ContextCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            answers: moka::future::Cache::builder()
                .max_capacity(ANSWER_CACHE_ENTRIES)
                .time_to_live(ttl.max(Duration::from_secs(1)))
                .build(),
            keep_passed: !ttl.is_zero(),
            etags: moka::sync::Cache::builder()
                .max_capacity(ETAG_CACHE_ENTRIES)
                .time_to_live(ETAG_CACHE_TTL)
                .build(),
            read_tokens: moka::future::Cache::builder()
                .max_capacity(READ_TOKEN_ENTRIES)
                .time_to_live(Duration::from_secs(3000))
                .build(),
        }
    }
}

impl ContextSource for GithubClient {
    async fn answer(&self, commit: &Commit, conditions: &[ContextCondition]) -> ContextAnswers {
        let mut answers = ContextAnswers::default();
        for condition in conditions {
            let (answer, request_ids) = self.answer_one(commit, condition).await;
            self.0
                .metrics
                .context_check(condition.key(), answer.label());
            for id in request_ids {
                answers.request_id(id);
            }
            answers.insert(condition.clone(), answer);
        }
        answers
    }
}

/// GitHub names: letters, digits, `-`, `_`, `.`; never `.` or `..`.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Deserialize)]
struct CheckRunList {
    #[serde(default)]
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    name: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    app: Option<CheckApp>,
}

#[derive(Deserialize)]
struct CheckApp {
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Deserialize)]
struct PullSimple {
    number: u64,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    merged_at: Option<String>,
}

#[derive(Deserialize)]
struct Pull {
    user: Option<User>,
    head: Head,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

#[derive(Deserialize)]
struct Review {
    #[serde(default)]
    user: Option<User>,
    state: String,
    #[serde(default)]
    commit_id: Option<String>,
}

impl GithubClient {
    /// One condition, from the cache or GitHub; concurrent identical
    /// questions share one computation.
    async fn answer_one(&self, commit: &Commit, condition: &ContextCondition) -> Produced {
        if !is_name(&commit.owner) || !is_name(&commit.repo) || commit.sha.len() > 64 {
            return (
                ContextAnswer::Fail("the token's repository or sha cannot be asked about".into()),
                Vec::new(),
            );
        }
        let cache = &self.0.context;
        let key: AnswerKey = (
            commit.owner.to_ascii_lowercase(),
            commit.repo.to_ascii_lowercase(),
            commit.sha.clone(),
            condition.clone(),
        );
        if let Some((answer, _)) = cache.answers.get(&key).await {
            return (answer, Vec::new());
        }
        let produced = cache
            .answers
            .try_get_with(key.clone(), async {
                let mut request_ids = Vec::new();
                let answer = match self.ask(commit, condition, &mut request_ids).await {
                    Ok(answer) => answer,
                    Err(err) => ContextAnswer::Unavailable(err.to_string()),
                };
                match answer {
                    ContextAnswer::Pass(_) => Ok((answer, request_ids)),
                    // Not cached: the next request asks again.
                    _ => Err((answer, request_ids)),
                }
            })
            .await;
        match produced {
            Ok(produced) => {
                if !cache.keep_passed {
                    cache.answers.invalidate(&key).await;
                }
                produced
            }
            Err(shared) => (*shared).clone(),
        }
    }

    async fn ask(
        &self,
        commit: &Commit,
        condition: &ContextCondition,
        request_ids: &mut Vec<String>,
    ) -> Result<ContextAnswer, GithubError> {
        let token = self.read_token(commit, request_ids).await?;
        match condition {
            ContextCondition::CheckPassed { name, app } => {
                self.check_passed(commit, &token, name, app.as_deref(), request_ids)
                    .await
            }
            ContextCondition::PullRequestApprovals(needed) => {
                self.approvals(commit, &token, *needed, request_ids).await
            }
        }
    }

    /// The internal read-only token for the commit's repository.
    async fn read_token(
        &self,
        commit: &Commit,
        request_ids: &mut Vec<String>,
    ) -> Result<SecretString, GithubError> {
        let installation = self
            .installation(&commit.owner, &commit.repo, request_ids)
            .await?;
        let cache = &self.0.context.read_tokens;
        let key = (installation, commit.repo.to_ascii_lowercase());
        if let Some((token, expires_at)) = cache.get(&key).await {
            if SystemTime::now() + READ_TOKEN_MARGIN < expires_at {
                return Ok(token);
            }
            cache.invalidate(&key).await;
        }
        let mut ids = Vec::new();
        let permissions: Permissions = [
            ("checks".to_owned(), Access::Read),
            ("pull_requests".to_owned(), Access::Read),
        ]
        .into_iter()
        .collect();
        let minted = cache
            .try_get_with(key, async {
                let repositories = [commit.repo.clone()];
                self.mint(installation, &repositories, &permissions, &mut ids)
                    .await
                    .map(|(token, expires_at, _)| (token, expires_at))
            })
            .await;
        request_ids.extend(ids);
        minted.map(|(token, _)| token).map_err(|err| (*err).clone())
    }

    /// A repository GET, conditional on the last `ETag` seen for its URL.
    /// `None` for a 404 or 422 (GitHub's answer that there is no such thing).
    async fn get_repository(
        &self,
        operation: Operation,
        url: url::Url,
        token: &SecretString,
        request_ids: &mut Vec<String>,
    ) -> Result<Option<Bytes>, GithubError> {
        let etags = &self.0.context.etags;
        let cached = etags.get(url.as_str());
        let extra: Vec<(&'static str, String)> = cached
            .as_ref()
            .map(|entry| ("if-none-match", entry.0.clone()))
            .into_iter()
            .collect();
        let answer = self
            .0
            .transport
            .send(
                operation,
                Method::GET,
                url.clone(),
                Some(token),
                &extra,
                None,
                request_ids,
            )
            .await?;
        match answer.status {
            StatusCode::OK => {
                if let Some(etag) = &answer.etag
                    && answer.body.len() <= MAX_ETAG_BODY
                {
                    etags.insert(
                        url.to_string(),
                        Arc::new((etag.clone(), answer.body.clone())),
                    );
                }
                Ok(Some(answer.body))
            }
            StatusCode::NOT_MODIFIED => match cached {
                Some(entry) => Ok(Some(entry.1.clone())),
                None => Err(GithubError::Invalid {
                    operation: operation.label(),
                    reason: "304 to an unconditional request".into(),
                }),
            },
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Ok(None),
            _ => Err(answer.error(operation)),
        }
    }

    fn repo_url(&self, commit: &Commit, rest: &[&str]) -> url::Url {
        let mut segments = vec!["repos", commit.owner.as_str(), commit.repo.as_str()];
        segments.extend_from_slice(rest);
        endpoint(&self.0.api, &segments)
    }

    async fn check_passed(
        &self,
        commit: &Commit,
        token: &SecretString,
        name: &str,
        app: Option<&str>,
        request_ids: &mut Vec<String>,
    ) -> Result<ContextAnswer, GithubError> {
        let mut url = self.repo_url(commit, &["commits", &commit.sha, "check-runs"]);
        url.query_pairs_mut()
            .append_pair("check_name", name)
            .append_pair("filter", "latest")
            .append_pair("per_page", &PER_PAGE.to_string());
        let Some(body) = self
            .get_repository(Operation::CheckRuns, url, token, request_ids)
            .await?
        else {
            return Ok(ContextAnswer::Fail(format!(
                "GitHub knows no commit {} in this repository",
                commit.sha
            )));
        };
        let list: CheckRunList =
            serde_json::from_slice(&body).map_err(|err| GithubError::Invalid {
                operation: Operation::CheckRuns.label(),
                reason: err.to_string(),
            })?;
        let by = app.map_or(String::new(), |slug| format!(" by app `{slug}`"));
        let latest = list
            .check_runs
            .iter()
            .filter(|run| run.name == name)
            .filter(|run| {
                app.is_none_or(|slug| {
                    run.app
                        .as_ref()
                        .and_then(|app| app.slug.as_deref())
                        .is_some_and(|seen| seen == slug)
                })
            })
            .max_by_key(|run| run.id);
        let Some(run) = latest else {
            return Ok(ContextAnswer::Fail(format!("no check run `{name}`{by}")));
        };
        let conclusion = run.conclusion.as_deref().unwrap_or("none");
        if run.status == "completed" && conclusion == "success" {
            Ok(ContextAnswer::Pass(format!(
                "check run `{name}`{by}: success"
            )))
        } else {
            Ok(ContextAnswer::Fail(format!(
                "check run `{name}`{by}: status {}, conclusion {conclusion}",
                run.status
            )))
        }
    }

    /// The pull request of the commit: named by the ref for pull request
    /// events, else the merged one whose merge commit is the sha.
    async fn pull_request_number(
        &self,
        commit: &Commit,
        token: &SecretString,
        request_ids: &mut Vec<String>,
    ) -> Result<Option<u64>, GithubError> {
        if matches!(
            commit.event_name.as_str(),
            "pull_request" | "pull_request_target"
        ) {
            return Ok(commit.pull_request_from_ref());
        }
        let mut url = self.repo_url(commit, &["commits", &commit.sha, "pulls"]);
        url.query_pairs_mut()
            .append_pair("per_page", &PER_PAGE.to_string());
        let Some(body) = self
            .get_repository(Operation::CommitPulls, url, token, request_ids)
            .await?
        else {
            return Ok(None);
        };
        let pulls: Vec<PullSimple> =
            serde_json::from_slice(&body).map_err(|err| GithubError::Invalid {
                operation: Operation::CommitPulls.label(),
                reason: err.to_string(),
            })?;
        Ok(pulls
            .iter()
            .find(|pull| {
                pull.merged_at.is_some() && pull.merge_commit_sha.as_deref() == Some(&commit.sha)
            })
            .map(|pull| pull.number))
    }

    async fn approvals(
        &self,
        commit: &Commit,
        token: &SecretString,
        needed: u32,
        request_ids: &mut Vec<String>,
    ) -> Result<ContextAnswer, GithubError> {
        let Some(number) = self.pull_request_number(commit, token, request_ids).await? else {
            return Ok(ContextAnswer::Fail(
                "no pull request for this commit".to_owned(),
            ));
        };
        let number_text = number.to_string();
        let url = self.repo_url(commit, &["pulls", &number_text]);
        let Some(body) = self
            .get_repository(Operation::Pull, url, token, request_ids)
            .await?
        else {
            return Ok(ContextAnswer::Fail(format!("no pull request {number}")));
        };
        let pull: Pull = serde_json::from_slice(&body).map_err(|err| GithubError::Invalid {
            operation: Operation::Pull.label(),
            reason: err.to_string(),
        })?;
        let author = pull.user.map(|user| user.id);
        let mut reviews: Vec<Review> = Vec::new();
        for page in 1..=MAX_REVIEW_PAGES {
            let mut url = self.repo_url(commit, &["pulls", &number_text, "reviews"]);
            url.query_pairs_mut()
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("page", &page.to_string());
            let Some(body) = self
                .get_repository(Operation::Reviews, url, token, request_ids)
                .await?
            else {
                break;
            };
            let batch: Vec<Review> =
                serde_json::from_slice(&body).map_err(|err| GithubError::Invalid {
                    operation: Operation::Reviews.label(),
                    reason: err.to_string(),
                })?;
            let full = batch.len() >= PER_PAGE;
            reviews.extend(batch);
            if !full {
                break;
            }
            if page == MAX_REVIEW_PAGES {
                return Err(GithubError::Invalid {
                    operation: Operation::Reviews.label(),
                    reason: format!("more than {} reviews", MAX_REVIEW_PAGES * PER_PAGE),
                });
            }
        }
        Ok(count_approvals(
            &reviews,
            author,
            &pull.head.sha,
            needed,
            number,
        ))
    }
}

/// The answer for `reviews` (oldest first) of pull request `number`.
fn count_approvals(
    reviews: &[Review],
    author: Option<u64>,
    head_sha: &str,
    needed: u32,
    number: u64,
) -> ContextAnswer {
    // Per reviewer, the latest deciding review.
    let mut deciding: HashMap<u64, &Review> = HashMap::new();
    for review in reviews {
        let Some(user) = &review.user else {
            continue;
        };
        if Some(user.id) == author {
            continue;
        }
        if matches!(
            review.state.as_str(),
            "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED"
        ) {
            deciding.insert(user.id, review);
        }
    }
    let blocking = deciding
        .values()
        .filter(|review| review.state == "CHANGES_REQUESTED")
        .count();
    let approvals = deciding
        .values()
        .filter(|review| {
            review.state == "APPROVED" && review.commit_id.as_deref() == Some(head_sha)
        })
        .count();
    let approvals = u32::try_from(approvals).unwrap_or(u32::MAX);
    if blocking > 0 {
        ContextAnswer::Fail(format!(
            "pull request {number}: changes requested by {blocking} reviewer(s); {approvals} approval(s) of the head commit"
        ))
    } else if approvals >= needed {
        ContextAnswer::Pass(format!(
            "pull request {number}: {approvals} approval(s) of the head commit"
        ))
    } else {
        ContextAnswer::Fail(format!(
            "pull request {number}: {approvals} approval(s) of the head commit, {needed} needed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(user: u64, state: &str, commit: &str) -> Review {
        Review {
            user: Some(User { id: user }),
            state: state.to_owned(),
            commit_id: Some(commit.to_owned()),
        }
    }

    #[test]
    fn each_reviewers_latest_deciding_review_counts() {
        let head = "h";
        let cases: Vec<(Vec<Review>, u32, &str)> = vec![
            (vec![review(1, "APPROVED", head)], 1, "pass"),
            // The author never counts.
            (vec![review(9, "APPROVED", head)], 1, "fail"),
            // An approval of an earlier push does not approve the head.
            (vec![review(1, "APPROVED", "old")], 1, "fail"),
            // Latest decides: approved after changes requested.
            (
                vec![
                    review(1, "CHANGES_REQUESTED", head),
                    review(1, "APPROVED", head),
                ],
                1,
                "pass",
            ),
            // Changes requested after an approval blocks.
            (
                vec![
                    review(1, "APPROVED", head),
                    review(2, "APPROVED", head),
                    review(1, "CHANGES_REQUESTED", head),
                ],
                1,
                "fail",
            ),
            // A comment changes nothing.
            (
                vec![review(1, "APPROVED", head), review(1, "COMMENTED", head)],
                1,
                "pass",
            ),
            // A dismissal takes the approval away.
            (
                vec![review(1, "APPROVED", head), review(1, "DISMISSED", head)],
                1,
                "fail",
            ),
            // Two reviewers needed.
            (
                vec![review(1, "APPROVED", head), review(1, "APPROVED", head)],
                2,
                "fail",
            ),
            (
                vec![review(1, "APPROVED", head), review(2, "APPROVED", head)],
                2,
                "pass",
            ),
        ];
        for (index, (reviews, needed, expected)) in cases.iter().enumerate() {
            let answer = count_approvals(reviews, Some(9), head, *needed, 7);
            assert_eq!(answer.label(), *expected, "case {index}: {answer:?}");
        }
    }

    #[test]
    fn names_that_cannot_be_a_repository_are_refused() {
        assert!(is_name("widget-service.v2_x"));
        for bad in ["", ".", "..", "a/b", "a b", "a?b"] {
            assert!(!is_name(bad), "{bad}");
        }
    }
}
