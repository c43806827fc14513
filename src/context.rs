//! Commit context: facts about the token's commit that only GitHub can vouch
//! for, and that an allow rule may require on top of its claim conditions.
//!
//! The policy names the questions ([`ContextCondition`]); whoever can answer
//! them gives a [`ContextAnswer`] per question: the live GitHub client on the
//! request path, a file of canned answers in the offline tools. The rules
//! themselves never call anyone: `decision` collects the answers for the
//! rules whose claim conditions already matched, and the rules then decide on
//! claims and answers together.
//!
//! Trust: the commit a question is about ([`Commit`]) is built from verified
//! claims only, so a job cannot ask about another repository or commit.

use std::collections::HashMap;

use crate::claims::ClaimSet;

/// One question a rule asks about the token's commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextCondition {
    /// The latest check run named `name` on the commit completed with
    /// conclusion `success`; when `app` is set, only runs created by the
    /// GitHub App with that slug count.
    CheckPassed {
        /// Check run name, compared exactly.
        name: String,
        /// Slug of the App that must have created the run.
        app: Option<String>,
    },
    /// The commit's pull request has at least this many approvals of its head
    /// commit, not counting its author, with no reviewer requesting changes.
    PullRequestApprovals(u32),
}

impl ContextCondition {
    /// The policy key of the condition, also its metric label.
    pub fn key(&self) -> &'static str {
        match self {
            Self::CheckPassed { .. } => "checks_passed",
            Self::PullRequestApprovals(_) => "pull_request_approvals",
        }
    }
}

impl std::fmt::Display for ContextCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CheckPassed { name, app: None } => write!(f, "checks_passed `{name}`"),
            Self::CheckPassed {
                name,
                app: Some(app),
            } => write!(f, "checks_passed `{name}` by app `{app}`"),
            Self::PullRequestApprovals(count) => write!(f, "pull_request_approvals >= {count}"),
        }
    }
}

/// The answer to one [`ContextCondition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextAnswer {
    /// The condition holds. The text says what was seen (audit only), e.g.
    /// `conclusion success` or `2 approvals of pull request 17`.
    Pass(String),
    /// The condition does not hold: missing, pending, failed, too few
    /// approvals, changes requested. The text says what was seen.
    Fail(String),
    /// Nobody could answer (GitHub down, timing out, rate-limited): the
    /// request must fail closed with a 503, never allow and never deny.
    Unavailable(String),
}

impl ContextAnswer {
    /// Closed label for `ci_context_checks_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass(_) => "pass",
            Self::Fail(_) => "fail",
            Self::Unavailable(_) => "unavailable",
        }
    }
    /// What was seen, for the audit event and `policy explain`.
    pub fn detail(&self) -> &str {
        match self {
            Self::Pass(detail) | Self::Fail(detail) | Self::Unavailable(detail) => detail,
        }
    }
}

/// Answers collected for one decision. A question without an answer is
/// treated as not answered: it never matches, and the offline tools say so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextAnswers {
    answers: HashMap<ContextCondition, ContextAnswer>,
    request_ids: Vec<String>,
}

impl ContextAnswers {
    /// Records the answer to `condition`.
    pub fn insert(&mut self, condition: ContextCondition, answer: ContextAnswer) {
        self.answers.insert(condition, answer);
    }
    /// The answer to `condition`, if it was asked.
    pub fn get(&self, condition: &ContextCondition) -> Option<&ContextAnswer> {
        self.answers.get(condition)
    }
    /// Every question answered, in a stable order (for the audit event).
    pub fn sorted(&self) -> Vec<(&ContextCondition, &ContextAnswer)> {
        let mut answers: Vec<_> = self.answers.iter().collect();
        answers.sort_by(|a, b| a.0.cmp(b.0));
        answers
    }
    /// Whether no question was asked.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
    /// Records the `x-github-request-id` of a call made to answer.
    pub fn request_id(&mut self, id: impl Into<String>) {
        self.request_ids.push(id.into());
    }
    /// The `x-github-request-id`s of the calls made, in order (audit).
    pub fn request_ids(&self) -> &[String] {
        &self.request_ids
    }
}

/// Who answers context questions: the GitHub App client on the request
/// path, canned answers in the offline tools.
pub(crate) trait ContextSource: Sync {
    /// Answers every condition in `conditions` about `commit`. Every
    /// condition gets an answer; one that cannot be had is
    /// [`ContextAnswer::Unavailable`], never a guess.
    fn answer(
        &self,
        commit: &Commit,
        conditions: &[ContextCondition],
    ) -> impl std::future::Future<Output = ContextAnswers> + Send;
}

/// The commit context questions are about, from verified claims only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Commit {
    /// Repository owner (`repository` claim before the `/`).
    pub owner: String,
    /// Repository name (after the `/`).
    pub repo: String,
    /// The `sha` claim.
    pub sha: String,
    /// The `event_name` claim (`pull_request`, `push`, …).
    pub event_name: String,
    /// The `ref` claim (`refs/pull/N/merge` for pull request events).
    pub git_ref: String,
}

impl Commit {
    /// The commit of a claim set; `None` when `repository` or `sha` is
    /// missing or malformed (every context condition then fails closed as
    /// not matched, never as allowed).
    pub fn of(claims: &ClaimSet) -> Option<Self> {
        let (owner, repo) = claims.get("repository")?.split_once('/')?;
        let sha = claims.get("sha")?;
        if owner.is_empty() || repo.is_empty() || repo.contains('/') || sha.is_empty() {
            return None;
        }
        Some(Self {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            event_name: claims.get("event_name").unwrap_or_default().to_owned(),
            git_ref: claims.get("ref").unwrap_or_default().to_owned(),
        })
    }

    /// The pull request number named by a `pull_request` event's ref
    /// (`refs/pull/N/merge` or `refs/pull/N/head`).
    pub fn pull_request_from_ref(&self) -> Option<u64> {
        let rest = self.git_ref.strip_prefix("refs/pull/")?;
        let (number, tail) = rest.split_once('/')?;
        if tail != "merge" && tail != "head" {
            return None;
        }
        number.parse().ok().filter(|n| *n > 0)
    }
}
