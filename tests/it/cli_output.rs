//! Whole-output snapshots of the offline commands (`policy`, `token inspect`,
//! `check-config`): the exit code, stdout and stderr of a run in one text,
//! compared with the reviewed `.snap` files in `tests/it/snapshots/`.
//!
//! What differs from run to run, or between checkouts, is replaced before the
//! comparison: a test's temporary directory by `[TMP]`, the repository's
//! directory by `[REPO]`, a policy version (SHA-256, whole or in its short
//! form) by `[HASH]`. Tokens are minted at fixed times and inspected `--at` a
//! fixed time, so no clock reaches a snapshot. A mismatch fails the test;
//! `scripts/test.sh` sets `INSTA_UPDATE=no` so that nothing is written then
//! (docs/testing.md says how to accept an intended change).

use std::path::Path;

/// The text a snapshot holds for one run: exit code, stdout, stderr.
pub fn render(code: Option<i32>, stdout: &str, stderr: &str) -> String {
    format!("exit: {code:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
}

/// Pretty-printed JSON, for a snapshot that reads well in review; panics
/// when `text` is not JSON, which is itself part of what the test checks.
pub fn pretty_json(text: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}):\n{text}"));
    serde_json::to_string_pretty(&value).unwrap()
}

/// Binds the placeholders for the rest of the calling scope.
pub fn redactions() -> insta::internals::SettingsBindDropGuard {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&temp_dir_pattern(), "[TMP]");
    settings.add_filter(&escape(Path::new(env!("CARGO_MANIFEST_DIR"))), "[REPO]");
    settings.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    // The short form `check-config` and `policy` print next to a file.
    settings.add_filter(r"\(version [0-9a-f]{12}\)", "(version [HASH])");
    settings.bind_to_scope()
}

/// A regular expression for the directories `tempfile::tempdir()` makes:
/// the system's temporary directory, then `.tmp` and random characters.
fn temp_dir_pattern() -> String {
    let base = std::env::temp_dir();
    let escaped: String = escape(&base);
    format!(r"{escaped}/\.tmp[0-9A-Za-z]+")
}

/// `path` as a regular expression matching exactly itself.
fn escape(path: &Path) -> String {
    let text = path.display().to_string();
    let text = text.trim_end_matches('/');
    text.chars()
        .flat_map(|c| {
            let special = c.is_ascii_punctuation();
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}
