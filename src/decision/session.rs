//! Session name and session tags for AssumeRole, built from verified claims only:
//! `decision` builds them into a grant's `AwsSession` from the claims it decided on.
//!
//! Trust: the claims come from a token whose signature checked out, but their
//! values are still strings a workflow author shaped (branch and environment
//! names are free text). Every value is therefore mapped into the alphabet STS
//! accepts and cut to its length limits here, so a hostile claim can neither
//! make AssumeRole fail with a validation error nor smuggle separators into the
//! session name that CloudTrail shows.
//!
//! Invariants: a session name is 2–64 characters of `[A-Za-z0-9_+=,.@-]`; tags
//! are at most 50, keys 1–128 and values 0–256 characters of STS's tag alphabet.

use crate::claims::ClaimSet;

/// Longest RoleSessionName STS accepts.
pub(crate) const SESSION_NAME_MAX_LEN: usize = 64;
/// Shortest RoleSessionName STS accepts.
pub(crate) const SESSION_NAME_MIN_LEN: usize = 2;
/// Most session tags STS accepts in one AssumeRole.
pub(crate) const MAX_SESSION_TAGS: usize = 50;
/// Longest session tag key, in characters.
pub(crate) const TAG_KEY_MAX_LEN: usize = 128;
/// Longest session tag value, in characters.
pub(crate) const TAG_VALUE_MAX_LEN: usize = 256;

/// Each part of the session name is cut to this many characters, so that an
/// oversized claim cannot push the later parts out of the name:
/// `gh` + 3 × (`-` + 19) = 62 ≤ 64. Real values are far shorter (run and check
/// run ids are 10–11 digits today).
const SESSION_NAME_PART_MAX_LEN: usize = 19;
/// Characters of `sha` used when the token has no `check_run_id`.
const SHORT_SHA_LEN: usize = 12;
/// Replacement for every character outside an alphabet.
const REPLACEMENT: char = '-';

/// Claims sent as session tags, in this order; absent claims are skipped.
const TAG_CLAIMS: [&str; 10] = [
    "repository",
    "repository_id",
    "repository_owner_id",
    "ref",
    "sha",
    "run_id",
    "run_attempt",
    "event_name",
    "environment",
    "job_workflow_ref",
];

/// The RoleSessionName for a job: `gh-<run_id>-<run_attempt>-<check_run_id>`.
///
/// Without `check_run_id` the first 12 characters of `sha` take its place; absent
/// (or empty) parts are left out. Every character outside STS's `[\w+=,.@-]` (ASCII
/// `\w`) becomes `-`, each part is cut to 19 characters and the whole to 64.
pub(crate) fn session_name(claims: &ClaimSet) -> String {
    let present = |name: &str| claims.get(name).filter(|value| !value.is_empty());
    let job = present("check_run_id")
        .map(str::to_owned)
        .or_else(|| present("sha").map(|sha| sha.chars().take(SHORT_SHA_LEN).collect()));
    let parts = [
        present("run_id").map(str::to_owned),
        present("run_attempt").map(str::to_owned),
        job,
    ];

    let mut name = String::from("gh");
    for part in parts.iter().flatten() {
        name.push('-');
        name.extend(
            part.chars()
                .take(SESSION_NAME_PART_MAX_LEN)
                .map(session_name_char),
        );
    }
    // Every character is ASCII by now, so counting chars counts bytes too.
    let mut name: String = name.chars().take(SESSION_NAME_MAX_LEN).collect();
    while name.len() < SESSION_NAME_MIN_LEN {
        name.push(REPLACEMENT);
    }
    name
}

/// Session tags for a job: `(key, value)` pairs from the claims in `TAG_CLAIMS`
/// order (`repository`, `repository_id`, `repository_owner_id`, `ref`, `sha`,
/// `run_id`, `run_attempt`, `event_name`, `environment`, `job_workflow_ref`).
///
/// Absent claims are skipped. Values are mapped into STS's tag alphabet (Unicode
/// letters, digits and spaces, and `_ . : / = + - @`; anything else becomes `-`)
/// and cut to 256 characters. An empty value is kept: STS allows values of length 0.
pub(crate) fn session_tags(claims: &ClaimSet) -> Vec<(String, String)> {
    TAG_CLAIMS
        .iter()
        .filter_map(|key| {
            claims.get(key).map(|value| {
                (
                    to_tag_text(key, TAG_KEY_MAX_LEN),
                    to_tag_text(value, TAG_VALUE_MAX_LEN),
                )
            })
        })
        .filter(|(key, _)| !key.is_empty())
        .take(MAX_SESSION_TAGS)
        .collect()
}

/// STS's RoleSessionName alphabet is `[\w+=,.@-]` with an ASCII `\w`.
fn session_name_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-') {
        c
    } else {
        REPLACEMENT
    }
}

/// Maps `text` into the tag alphabet and cuts it to `max_len` characters.
///
/// STS validates with Java, whose string length counts UTF-16 code units, so a
/// character outside the Basic Multilingual Plane counts twice here as well.
fn to_tag_text(text: &str, max_len: usize) -> String {
    // Sized once: every character maps to one of the same UTF-8 length or
    // to the one-byte replacement.
    let mut out = String::with_capacity(text.len().min(max_len.saturating_mul(4)));
    let mut units = 0;
    for c in text.chars().map(tag_char) {
        units += c.len_utf16();
        if units > max_len {
            break;
        }
        out.push(c);
    }
    out
}

/// STS's tag pattern is `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn tag_char(c: char) -> char {
    let allowed = c.is_ascii_alphanumeric()
        || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
        || (!c.is_ascii() && (is_letter(c) || c.is_numeric() || is_separator(c)));
    if allowed { c } else { REPLACEMENT }
}

/// A character that is certainly in `\p{L}` (or `\p{Nl}`, which `\p{N}` admits).
///
/// Rust's `char::is_alphabetic` is wider than `\p{L}`: it admits combining vowel
/// signs (`Other_Alphabetic`, general category `M`) that STS would reject, failing
/// the whole AssumeRole. `XID_Start` is `L` and `Nl` plus the six `Other_ID_Start`
/// characters excluded below, minus a few letters whose NFKC form differs; those
/// few become `-`, which is safe.
fn is_letter(c: char) -> bool {
    unicode_ident::is_xid_start(c)
        && !matches!(
            c,
            '\u{1885}' | '\u{1886}' | '\u{2118}' | '\u{212E}' | '\u{309B}' | '\u{309C}'
        )
}

/// `\p{Z}`: space, line and paragraph separators; exactly the white space that is
/// not a control character (tabs and newlines are `Cc`, not `Z`).
fn is_separator(c: char) -> bool {
    c.is_whitespace() && !c.is_control()
}

#[cfg(test)]
mod tests;
