//! The audit text for a refusal: which condition of which rule came closest.
//!
//! Runs only on denials, so it may re-evaluate and allocate. Its text goes to the
//! audit log, never to the caller, so it may quote claim values; it is kept to
//! one line (values are quoted with escapes) and bounded in length whatever the
//! token or the policy contain, because it lands in a log line.

use std::borrow::Cow;

use crate::claims::ClaimSet;

use super::model::{Condition, Role, RoleOutcome, RuleKind};

/// Longest claim value or pattern quoted in an audit line, in characters.
const MAX_AUDIT_VALUE_CHARS: usize = 128;

/// Most patterns listed in an audit line.
const MAX_AUDIT_PATTERNS: usize = 8;

/// Longest `first_failed` text, in characters: it is one line of an audit event.
const MAX_AUDIT_LINE_CHARS: usize = 1024;

/// The closest miss among `roles`; see [`super::Policy::evaluate`] for the choice.
pub(super) fn describe(roles: &[Role], claims: &ClaimSet) -> String {
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
    let mut closest: Option<(&Role, usize, &Condition, usize)> = None;
    for role in roles {
        for (index, rule) in role.allow.iter().enumerate() {
            let matched = rule
                .conditions
                .iter()
                .filter(|condition| condition.matches(claims))
                .count();
            let failed = rule
                .conditions
                .iter()
                .find(|condition| !condition.matches(claims));
            if let Some(failed) = failed
                && closest.is_none_or(|(_, _, _, best)| matched > best)
            {
                closest = Some((role, index, failed, matched));
            }
        }
    }
    let Some((role, index, condition, _)) = closest else {
        return "no allow rule to evaluate".to_owned();
    };
    let rule = role.rule_name(RuleKind::Allow, index);
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
