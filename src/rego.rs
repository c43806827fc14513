//! Rego, for teams that already have OPA policies: `[policy] rego = "file.rego"`.
//!
//! The Rego query (default `data.broker.allow`) is evaluated in process with
//! regorus AFTER the built-in rules have granted a role, on the input
//! `{claims, request, role}`; both must allow. Only the boolean `true` allows:
//! `false`, undefined, any other value and any evaluation error deny, and an
//! evaluation that runs past its time limit is an error. The module is
//! compiled once at start-up and on every reload.
//!
//! The time limit is enforced twice. regorus checks its own clock between
//! steps of the interpreter and stops there; but one built-in call (say
//! `numbers.range` over millions of numbers) runs to its end without a check,
//! and regorus offers no way to interrupt it. So a request never waits for an
//! evaluation longer than the limit: the evaluation runs on a blocking thread
//! ([`RegoPolicy::evaluate_within_limit`]), the request stops waiting once it
//! has run for the limit and is refused, and the evaluation is abandoned to
//! finish on its own. At most [`MAX_EVALUATIONS_IN_FLIGHT`] evaluations run at
//! once, counting abandoned ones, so runaway rules can hold only that many
//! threads; getting a place and a thread is bounded by the same limit again,
//! so a request waits at most twice the limit in all.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::Digest;

/// Wall-clock limit of one evaluation, from its start; the wait for a place
/// and a thread to start it on has the same bound.
pub(crate) const EVALUATION_LIMIT: Duration = Duration::from_millis(50);
/// Limit of the one evaluation (on an empty input) made when a module is loaded.
const LOAD_PROBE_LIMIT: Duration = Duration::from_secs(2);
/// Most evaluations running at once in the process, abandoned ones included.
pub(crate) const MAX_EVALUATIONS_IN_FLIGHT: usize = 8;
/// The places of [`MAX_EVALUATIONS_IN_FLIGHT`]; one is held until the evaluation
/// itself ends, not until its request stops waiting.
static EVALUATION_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_EVALUATIONS_IN_FLIGHT);
/// Largest Rego file read.
const MAX_REGO_BYTES: u64 = 1024 * 1024;

/// Why a Rego module could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub(crate) struct RegoError {
    /// File or source name.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegoDecision {
    /// The query evaluated to `true`.
    Allow,
    /// The query evaluated to `false`.
    Deny,
    /// The query has no value for this input.
    Undefined,
    /// Evaluation failed, or produced something other than a boolean.
    Error(String),
}

impl RegoDecision {
    /// Whether this decision allows.
    pub(crate) fn allows(&self) -> bool {
        matches!(self, RegoDecision::Allow)
    }

    /// The audit detail of a refusal: `rego: <label>`, or the error.
    pub(crate) fn audit_detail(&self) -> String {
        match self {
            RegoDecision::Error(err) => format!("rego error: {err}"),
            other => format!("rego: {}", other.label()),
        }
    }

    /// A short word for audit and `policy explain`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            RegoDecision::Allow => "allow",
            RegoDecision::Deny => "deny",
            RegoDecision::Undefined => "undefined",
            RegoDecision::Error(_) => "error",
        }
    }
}

/// A compiled Rego module and the query to ask it.
#[derive(Clone)]
pub(crate) struct RegoPolicy {
    engine: regorus::Engine,
    query: String,
    hash: String,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Reads and compiles `path`.
    pub(crate) fn load(path: &Path, query: &str) -> Result<Self, RegoError> {
        let name = path.display().to_string();
        let error = |reason: String| RegoError {
            path: name.clone(),
            reason,
        };
        let metadata =
            std::fs::metadata(path).map_err(|err| error(format!("cannot read: {err}")))?;
        if metadata.len() > MAX_REGO_BYTES {
            return Err(error(format!("larger than {MAX_REGO_BYTES} bytes")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|err| error(format!("cannot read: {err}")))?;
        Self::compile(&text, &name, query)
    }

    /// Compiles Rego text; `source` names it in errors. The query must name a
    /// rule under a package the module defines, so a typo fails here rather
    /// than denying every request.
    pub(crate) fn compile(text: &str, source: &str, query: &str) -> Result<Self, RegoError> {
        let error = |reason: String| RegoError {
            path: source.to_owned(),
            reason,
        };
        let timer = |limit| regorus::utils::limits::ExecutionTimerConfig {
            limit,
            check_interval: NonZeroU32::MIN,
        };
        let mut engine = regorus::Engine::new();
        // A generous limit for the one evaluation at load: a busy machine must
        // not stop the broker from starting or reloading.
        engine.set_execution_timer_config(timer(LOAD_PROBE_LIMIT));
        engine
            .add_policy(source.to_owned(), text.to_owned())
            .map_err(|err| error(format!("does not compile: {err}")))?;
        let packages = engine
            .get_packages()
            .map_err(|err| error(err.to_string()))?;
        let known = packages
            .iter()
            .any(|package| query.starts_with(&format!("{package}.")));
        if !known {
            return Err(error(format!(
                "query `{query}` names no rule of this module (packages: {})",
                packages.join(", ")
            )));
        }
        // One evaluation on an empty input proves the query parses, and
        // leaves the engine prepared (modules analysed and scheduled), so that
        // each request's clone starts evaluating at once.
        engine.set_input(regorus::Value::new_object());
        engine
            .eval_query(query.to_owned(), false)
            .map_err(|err| error(format!("query `{query}`: {err}")))?;
        engine.set_execution_timer_config(timer(EVALUATION_LIMIT));
        let hash = hex::encode(sha2::Sha256::digest(format!("{query}\n{text}").as_bytes()));
        Ok(Self {
            engine,
            query: query.to_owned(),
            hash,
        })
    }

    /// Hash of the query and the module text.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// Evaluations running now, abandoned ones included.
    #[cfg(test)]
    pub(crate) fn evaluations_running() -> usize {
        MAX_EVALUATIONS_IN_FLIGHT.saturating_sub(EVALUATION_SLOTS.available_permits())
    }

    /// Evaluates the query on `input` off the async workers. Waits at most
    /// [`EVALUATION_LIMIT`] for the evaluation to start (a free place and a
    /// thread), then at most [`EVALUATION_LIMIT`] for it to end; past either,
    /// the answer is an error, and an evaluation still running is left to
    /// finish on its thread, still holding its place.
    /// `request_id` names the request in the log line of an abandoned evaluation.
    pub(crate) async fn evaluate_within_limit(
        &self,
        input: serde_json::Value,
        request_id: &str,
    ) -> RegoDecision {
        let limit_ms = EVALUATION_LIMIT.as_millis() as u64;
        let start_deadline = tokio::time::Instant::now() + EVALUATION_LIMIT;
        let slot = match tokio::time::timeout_at(start_deadline, EVALUATION_SLOTS.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return RegoDecision::Error("evaluation slots closed".to_owned()),
            Err(_) => {
                return RegoDecision::Error(format!(
                    "no evaluation thread free within {limit_ms} ms: {MAX_EVALUATIONS_IN_FLIGHT} evaluations are running"
                ));
            }
        };
        let engine = self.engine.clone();
        let query = self.query.clone();
        let abandoned = Arc::new(AtomicBool::new(false));
        let abandoned_by_caller = abandoned.clone();
        let request_id = request_id.to_owned();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let evaluation = tokio::task::spawn_blocking(move || {
            if abandoned.load(Ordering::Acquire) {
                // Refused before it started: no need to run it.
                return None;
            }
            let started = tokio::time::Instant::now();
            let _ = started_tx.send(started);
            let decision = decide(engine, query, &input);
            drop(slot);
            if abandoned.load(Ordering::Acquire) {
                tracing::warn!(
                    request_id = %request_id,
                    rego.elapsed_ms = started.elapsed().as_millis() as u64,
                    rego.limit_ms = limit_ms,
                    "an abandoned Rego evaluation has ended; its request was refused at the time limit (a built-in call in the module runs too long)"
                );
            }
            Some(decision)
        });
        // The limit counts from the evaluation's start: time spent waiting for
        // a thread (a busy machine) is bounded separately, above and here.
        let started = match tokio::time::timeout_at(start_deadline, started_rx).await {
            Ok(Ok(started)) => started,
            Ok(Err(_)) => return RegoDecision::Error("the evaluation failed".to_owned()),
            Err(_) => {
                abandoned_by_caller.store(true, Ordering::Release);
                return RegoDecision::Error(format!(
                    "no evaluation thread started within {limit_ms} ms"
                ));
            }
        };
        match tokio::time::timeout_at(started + EVALUATION_LIMIT, evaluation).await {
            Ok(Ok(Some(decision))) => decision,
            Ok(Ok(None) | Err(_)) => RegoDecision::Error("the evaluation failed".to_owned()),
            Err(_) => {
                abandoned_by_caller.store(true, Ordering::Release);
                RegoDecision::Error(format!("evaluation ran past its {limit_ms} ms limit"))
            }
        }
    }

    /// Evaluates the query on `input` (`{claims, request, role}`) on this
    /// thread; regorus's own clock stops it between interpreter steps only.
    #[cfg(test)]
    pub(crate) fn evaluate(&self, input: &serde_json::Value) -> RegoDecision {
        decide(self.engine.clone(), self.query.clone(), input)
    }
}

/// Evaluates `query` on `input` with `engine` (a clone of the compiled one).
fn decide(mut engine: regorus::Engine, query: String, input: &serde_json::Value) -> RegoDecision {
    engine.set_input(regorus::Value::from(input.clone()));
    let results = match engine.eval_query(query, false) {
        Ok(results) => results,
        Err(err) => return RegoDecision::Error(err.to_string()),
    };
    let Some(value) = results
        .result
        .first()
        .and_then(|result| result.expressions.first())
        .map(|expression| &expression.value)
    else {
        return RegoDecision::Undefined;
    };
    match value {
        regorus::Value::Bool(true) => RegoDecision::Allow,
        regorus::Value::Bool(false) => RegoDecision::Deny,
        regorus::Value::Undefined => RegoDecision::Undefined,
        _ => RegoDecision::Error("the query did not produce a boolean".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_REGO_QUERY as DEFAULT_QUERY;

    const MODULE: &str = r#"
package broker

import rego.v1

default allow := false

allow if {
    input.claims.repository == "ourorg/app"
    input.role.name == "deploy"
}

explode if {
    input.claims.repository == "boom"
    to_number("not a number") > 1
}
"#;

    fn input(repository: &str) -> serde_json::Value {
        serde_json::json!({
            "claims": {"repository": repository},
            "request": {"role": "deploy"},
            "role": {"name": "deploy", "role_arn": "arn:aws:iam::123456789012:role/x", "duration_seconds": 900}
        })
    }

    #[test]
    fn allow_deny_undefined_and_error() {
        let rego = RegoPolicy::compile(MODULE, "broker.rego", DEFAULT_QUERY).unwrap();
        assert_eq!(rego.evaluate(&input("ourorg/app")), RegoDecision::Allow);
        assert_eq!(rego.evaluate(&input("ourorg/other")), RegoDecision::Deny);
        let undefined = RegoPolicy::compile(MODULE, "broker.rego", "data.broker.explode").unwrap();
        assert_eq!(
            undefined.evaluate(&input("ourorg/app")),
            RegoDecision::Undefined
        );
        assert!(matches!(
            undefined.evaluate(&input("boom")),
            RegoDecision::Error(_)
        ));
        assert!(!RegoDecision::Undefined.allows());
    }

    #[test]
    fn load_errors_name_the_problem() {
        let err = RegoPolicy::compile("package broker\nallow if {", "bad.rego", DEFAULT_QUERY)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("bad.rego: does not compile"),
            "{err}"
        );
        let err = RegoPolicy::compile(MODULE, "broker.rego", "data.other.allow").unwrap_err();
        assert!(err.to_string().contains("names no rule"), "{err}");
    }

    #[test]
    fn a_runaway_evaluation_is_an_error_not_a_hang() {
        let module = "package broker\nimport rego.v1\ndefault allow := false\nallow if {\n  input.claims.repository == \"slow\"\n  count([y | some x in numbers.range(1, 2000000); y := x * x; y > 0]) > 0\n}\n";
        let rego = RegoPolicy::compile(module, "slow.rego", DEFAULT_QUERY).unwrap();
        assert_eq!(rego.evaluate(&input("fast")), RegoDecision::Deny);
        let started = std::time::Instant::now();
        let decision = rego.evaluate(&input("slow"));
        assert!(
            matches!(decision, RegoDecision::Error(_)),
            "{decision:?} after {:?}",
            started.elapsed()
        );
    }

    /// A module whose `allow` makes one long built-in call for repository
    /// "slow": regorus's own clock cannot stop it.
    const RUNAWAY: &str = "package broker\nimport rego.v1\ndefault allow := false\nallow if input.claims.repository == \"ourorg/app\"\nallow if {\n  input.claims.repository == \"slow\"\n  count(numbers.range(1, 1500000)) < 0\n}\n";

    // One test for everything that uses the process-wide evaluation places,
    // so that no other test holds one meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_limit_holds_even_inside_a_builtin_and_places_are_bounded() {
        let rego = RegoPolicy::compile(RUNAWAY, "runaway.rego", DEFAULT_QUERY).unwrap();
        assert_eq!(allowed(&rego).await, RegoDecision::Allow);

        // The request stops waiting at the limit while the evaluation is
        // still running on its thread, holding its place.
        let mut decision = RegoDecision::Undefined;
        for _ in 0..5 {
            wait_until_idle().await;
            decision = rego.evaluate_within_limit(input("slow"), "test").await;
            match &decision {
                // Only a machine too busy to start the thread in time.
                RegoDecision::Error(why) if why.contains("started within") => {}
                _ => break,
            }
        }
        assert!(
            matches!(&decision, RegoDecision::Error(why) if why.contains("ran past its 50 ms limit")),
            "{decision:?}"
        );
        assert!(RegoPolicy::evaluations_running() >= 1);
        // Meanwhile other evaluations still get their answer.
        assert_eq!(allowed(&rego).await, RegoDecision::Allow);
        assert!(RegoPolicy::evaluations_running() >= 1);
        wait_until_idle().await;

        // With every place taken (as by runaways still running), the next
        // evaluation is refused at the limit instead of starting a thread.
        let taken = EVALUATION_SLOTS
            .acquire_many(u32::try_from(MAX_EVALUATIONS_IN_FLIGHT).unwrap())
            .await
            .unwrap();
        assert_eq!(RegoPolicy::evaluations_running(), MAX_EVALUATIONS_IN_FLIGHT);
        let decision = rego
            .evaluate_within_limit(input("ourorg/app"), "test")
            .await;
        assert!(
            matches!(&decision, RegoDecision::Error(why) if why.contains("no evaluation thread free")),
            "{decision:?}"
        );
        // Once a place frees up, evaluations run again.
        drop(taken);
        assert_eq!(allowed(&rego).await, RegoDecision::Allow);
    }

    /// The answer for an input the module allows. A machine busy enough to
    /// hold this evaluation's thread off the CPU for the whole limit refuses
    /// it like a runaway; a few attempts keep that from failing the test.
    async fn allowed(rego: &RegoPolicy) -> RegoDecision {
        let mut decision = RegoDecision::Undefined;
        for _ in 0..5 {
            decision = rego
                .evaluate_within_limit(input("ourorg/app"), "test")
                .await;
            match &decision {
                RegoDecision::Error(why) if why.contains("50 ms") => {}
                _ => break,
            }
        }
        decision
    }

    async fn wait_until_idle() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while RegoPolicy::evaluations_running() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "abandoned evaluations never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
