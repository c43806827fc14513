//! Session name and tag mapping on ordinary, odd and hostile claims.

use super::*;

fn claims(pairs: &[(&str, &str)]) -> ClaimSet {
    let mut set = ClaimSet::default();
    for (name, value) in pairs {
        set.insert(*name, *value);
    }
    set
}

fn in_session_alphabet(name: &str) -> bool {
    name.chars().all(|c| session_name_char(c) == c)
}

fn github_claims() -> ClaimSet {
    claims(&[
        ("repository", "octo-org/octo-repo"),
        ("repository_id", "123456789"),
        ("repository_owner_id", "987654"),
        ("ref", "refs/heads/main"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("run_id", "1234567890"),
        ("run_attempt", "2"),
        ("check_run_id", "31337000001"),
        ("event_name", "push"),
        (
            "job_workflow_ref",
            "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
        ),
        ("actor", "octocat"),
    ])
}

#[test]
fn session_name_uses_run_attempt_and_check_run() {
    assert_eq!(
        session_name(&github_claims()),
        "gh-1234567890-2-31337000001"
    );
}

#[test]
fn session_name_falls_back_to_short_sha() {
    let set = claims(&[
        ("run_id", "77"),
        ("run_attempt", "1"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
    ]);
    assert_eq!(session_name(&set), "gh-77-1-0123456789ab");
}

#[test]
fn session_name_uses_what_is_available() {
    assert_eq!(session_name(&claims(&[("run_id", "77")])), "gh-77");
    assert_eq!(
        session_name(&claims(&[("run_id", ""), ("check_run_id", "5")])),
        "gh-5"
    );
    assert_eq!(session_name(&ClaimSet::default()), "gh");
}

#[test]
fn session_name_maps_and_bounds_hostile_input() {
    let mut run_id = String::from("12 34\u{e9}\u{1F600}/<script>");
    while run_id.len() < 4096 {
        run_id.push_str("x y\u{2028}z\u{0}");
    }
    let set = claims(&[
        ("run_id", run_id.as_str()),
        ("run_attempt", "1;rm -rf"),
        ("check_run_id", "9\n9"),
    ]);
    let name = session_name(&set);
    assert!(name.len() <= SESSION_NAME_MAX_LEN, "{name}");
    assert!(name.len() >= SESSION_NAME_MIN_LEN, "{name}");
    assert!(in_session_alphabet(&name), "{name}");
    assert!(name.starts_with("gh-12-34---"), "{name}");
    // The later parts survive an oversized first part.
    assert!(name.ends_with("-1-rm--rf-9-9"), "{name}");
}

#[test]
fn session_name_is_always_within_limits() {
    let long = "9".repeat(500);
    let set = claims(&[
        ("run_id", long.as_str()),
        ("run_attempt", long.as_str()),
        ("check_run_id", long.as_str()),
    ]);
    let name = session_name(&set);
    assert_eq!(name.len(), 2 + 3 * (1 + SESSION_NAME_PART_MAX_LEN));
    assert!(name.len() <= SESSION_NAME_MAX_LEN);
    assert!(in_session_alphabet(&name));
}

#[test]
fn tags_carry_the_documented_claims_in_order() {
    let tags = session_tags(&github_claims());
    let keys: Vec<&str> = tags.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "repository",
            "repository_id",
            "repository_owner_id",
            "ref",
            "sha",
            "run_id",
            "run_attempt",
            "event_name",
            "job_workflow_ref",
        ]
    );
    assert!(tags.contains(&(
        "job_workflow_ref".into(),
        "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main".into()
    )));
    // `actor` is not a tag; `environment` is absent, so it is omitted.
    assert!(!keys.contains(&"actor"));
    assert!(!keys.contains(&"environment"));
}

#[test]
fn environment_tag_when_present() {
    let mut set = github_claims();
    set.insert("environment", "production");
    let tags = session_tags(&set);
    assert!(tags.contains(&("environment".into(), "production".into())));
    assert_eq!(tags.len(), 10);
}

#[test]
fn tag_values_are_mapped_into_the_alphabet() {
    let set = claims(&[
        ("ref", "refs/heads/feat#1!"),
        ("environment", "prod (eu)\tcanary\u{2028}"),
        ("event_name", ""),
        ("repository", "caf\u{e9}/\u{65e5}\u{672c}\u{0663}"),
        // Devanagari KA followed by the vowel sign AA (a combining mark).
        ("sha", "\u{915}\u{93e}"),
    ]);
    let tags = session_tags(&set);
    let value = |key: &str| {
        tags.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value("ref"), "refs/heads/feat-1-");
    assert_eq!(value("environment"), "prod -eu--canary\u{2028}");
    assert_eq!(value("event_name"), "");
    assert_eq!(value("repository"), "caf\u{e9}/\u{65e5}\u{672c}\u{0663}");
    assert_eq!(value("sha"), "\u{915}-");
}

#[test]
fn long_tag_values_are_truncated() {
    let long = "a".repeat(1000);
    let emoji = "\u{1d400}".repeat(200);
    let set = claims(&[("ref", long.as_str()), ("environment", emoji.as_str())]);
    let tags = session_tags(&set);
    assert_eq!(tags.len(), 2);
    for (key, value) in &tags {
        assert!(key.chars().count() <= TAG_KEY_MAX_LEN);
        assert!(value.encode_utf16().count() <= TAG_VALUE_MAX_LEN, "{key}");
    }
    assert_eq!(tags[0].1, "a".repeat(TAG_VALUE_MAX_LEN));
    // A mathematical bold letter is a letter, but two UTF-16 units.
    assert_eq!(tags[1].1, "\u{1d400}".repeat(TAG_VALUE_MAX_LEN / 2));
}

#[test]
fn no_claims_no_tags() {
    assert!(session_tags(&ClaimSet::default()).is_empty());
}

#[test]
fn tag_limits_hold_for_the_fixed_claim_list() {
    assert!(TAG_CLAIMS.len() <= MAX_SESSION_TAGS);
    assert!(
        TAG_CLAIMS
            .iter()
            .all(|key| to_tag_text(key, TAG_KEY_MAX_LEN) == *key)
    );
}
