//! The audit text for a refusal: which condition of which rule came closest.
//!
//! Runs only on denials, so it may re-evaluate and allocate. Its text goes to the
//! audit log, never to the caller, so it may quote claim values; it is kept to
//! one line (values are quoted with escapes) and bounded in length whatever the
//! token or the policy contain, because it lands in a log line.

use std::borrow::Cow;

use crate::claims::ClaimSet;
use crate::context::{ContextAnswer, ContextAnswers, ContextCondition};

use super::model::{Condition, Role, RoleOutcome, RuleKind};

/// Longest claim value or pattern quoted in an audit line, in characters.
const MAX_AUDIT_VALUE_CHARS: usize = 128;

/// Most patterns listed in an audit line.
const MAX_AUDIT_PATTERNS: usize = 8;

/// Longest `first_failed` text, in characters: it is one line of an audit event.
const MAX_AUDIT_LINE_CHARS: usize = 1024;

/// The closest miss among `roles`; see [`super::Policy::evaluate`] for the choice.
pub(super) fn describe(roles: &[Role], claims: &ClaimSet, answers: &ContextAnswers) -> String {
    // A role whose allow rule matched but a deny rule refused is as close as a token gets.
    for role in roles {
        if let RoleOutcome::Denied { allow, deny } = role.outcome(claims) {
            return clamp(format!(
                "{} matched, but so did {}",
                role.rule_name(RuleKind::Allow, allow),
                role.rule_name(RuleKind::Deny, deny)
            ));
        }
    }
    let mut closest: Option<(&Role, usize, Failed<'_>, usize)> = None;
    for role in roles {
        for (index, rule) in role.allow.iter().enumerate() {
            // Claim conditions first: context conditions are only asked
            // once every claim condition matched.
            let matched = rule
                .conditions
                .iter()
                .filter(|condition| condition.matches(claims))
                .count()
                + rule
                    .context
                    .iter()
                    .filter(|condition| {
                        matches!(answers.get(condition), Some(ContextAnswer::Pass(_)))
                    })
                    .count();
            let failed = rule
                .conditions
                .iter()
                .find(|condition| !condition.matches(claims))
                .map(Failed::Claim)
                .or_else(|| {
                    rule.context
                        .iter()
                        .find(|condition| {
                            !matches!(answers.get(condition), Some(ContextAnswer::Pass(_)))
                        })
                        .map(Failed::Context)
                });
            if let Some(failed) = failed
                && closest.is_none_or(|(_, _, _, best)| matched > best)
            {
                closest = Some((role, index, failed, matched));
            }
        }
    }
    let Some((role, index, failed, _)) = closest else {
        return "no allow rule to evaluate".to_owned();
    };
    let rule = role.rule_name(RuleKind::Allow, index);
    let condition = match failed {
        Failed::Claim(condition) => condition,
        Failed::Context(condition) => {
            return clamp(format!("{rule}.{}", context_text(condition, answers)));
        }
    };
    let text = match claims.get(&condition.claim) {
        None => format!("{rule}.{}: claim absent", condition.claim),
        Some(value) => {
            let mut text = format!(
                "{rule}.{}: {:?} does not match any of [",
                condition.claim,
                truncate(value, MAX_AUDIT_VALUE_CHARS)
            );
            for (position, pattern) in condition
                .patterns
                .iter()
                .take(MAX_AUDIT_PATTERNS)
                .enumerate()
            {
                if position > 0 {
                    text.push_str(", ");
                }
                text.push_str(&format!(
                    "{:?}",
                    truncate(pattern.source(), MAX_AUDIT_VALUE_CHARS)
                ));
            }
            if let Some(more) = condition
                .patterns
                .len()
                .checked_sub(MAX_AUDIT_PATTERNS)
                .filter(|n| *n > 0)
            {
                text.push_str(&format!(", … {more} more"));
            }
            text.push(']');
            text
        }
    };
    clamp(text)
}

/// A value from a token or a request, quoted for an audit line and cut to
/// [`MAX_AUDIT_VALUE_CHARS`].
pub(super) fn quote(text: &str) -> String {
    format!("{:?}", truncate(text, MAX_AUDIT_VALUE_CHARS))
}

/// What kept the closest rule from granting.
#[derive(Clone, Copy)]
enum Failed<'r> {
    /// A claim condition that did not match.
    Claim(&'r Condition),
    /// A context condition whose answer was not a pass (or missing).
    Context(&'r ContextCondition),
}

/// `checks_passed `x`: fail (completed/failure by snyk)`, or `…: not answered`.
fn context_text(condition: &ContextCondition, answers: &ContextAnswers) -> String {
    match answers.get(condition) {
        Some(answer) => format!(
            "{condition}: {} ({})",
            answer.label(),
            truncate(answer.detail(), MAX_AUDIT_VALUE_CHARS)
        ),
        None => format!("{condition}: not answered"),
    }
}

/// The audit text for a role left undecided by an unavailable answer: its
/// rule and the first condition whose answer was unavailable.
pub(super) fn unavailable(role: &Role, allow: usize, answers: &ContextAnswers) -> String {
    let rule = role.rule_name(RuleKind::Allow, allow);
    let condition = role.allow.get(allow).and_then(|rule| {
        rule.context
            .iter()
            .find(|condition| matches!(answers.get(condition), Some(ContextAnswer::Unavailable(_))))
    });
    match condition {
        Some(condition) => clamp(format!("{rule}.{}", context_text(condition, answers))),
        None => format!("{rule}: a context answer was unavailable"),
    }
}

/// `text` cut to at most `max` characters, the last of them a `…` marking the cut.
fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.chars().nth(max).is_none() {
        return Cow::Borrowed(text);
    }
    let end = text
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(text.len(), |(end, _)| end);
    Cow::Owned(format!("{}…", text.get(..end).unwrap_or_default()))
}

/// Bounds an audit line whatever the policy's names and patterns look like.
fn clamp(text: String) -> String {
    match truncate(&text, MAX_AUDIT_LINE_CHARS) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}
