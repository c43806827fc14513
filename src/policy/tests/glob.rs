//! The glob matcher, including the traps an anchoring or `/` mistake would fall into.

use std::time::{Duration, Instant};

use crate::policy::glob::{CaseFold, Glob, MAX_PATTERN_CHARS, Token};

fn matches(pattern: &str, fold: CaseFold, value: &str) -> bool {
    Glob::compile(pattern, fold).unwrap().matches(value)
}

/// Each `(pattern, value, matches)` of `cases`, under `fold`.
fn assert_table(cases: &[(&str, &str, bool)], fold: CaseFold) {
    for (pattern, value, expected) in cases {
        assert_eq!(
            matches(pattern, fold, value),
            *expected,
            "pattern {pattern:?} against {value:?}"
        );
    }
}

#[test]
fn exact_claims_table() {
    // (pattern, value, expected)
    let cases: &[(&str, &str, bool)] = &[
        // `*` stops at `/`, `**` does not.
        ("refs/heads/*", "refs/heads/main", true),
        ("refs/heads/*", "refs/heads/a/b", false),
        ("refs/heads/**", "refs/heads/a/b", true),
        ("refs/heads/**", "refs/heads/main", true),
        ("refs/heads/**", "refs/heads/", true),
        ("refs/heads/*", "refs/heads/", true),
        ("refs/heads/*", "refs/heads", false),
        ("refs/tags/v*", "refs/tags/v1.2.3", true),
        ("refs/tags/v*", "refs/tags/1.2.3", false),
        // Whole-value anchoring, both ends.
        ("main", "main", true),
        ("main", "main-attacker", false),
        ("main", "xmain", false),
        ("main", "mai", false),
        ("main", "", false),
        ("refs/heads/main", "refs/heads/main/x", false),
        ("ourorg/*", "ourorg/app", true),
        ("ourorg/*", "ourorg/a/b", false),
        ("ourorg/*", "ourorg-evil/app", false),
        ("ourorg/*", "evil/ourorg/app", false),
        ("ourorg/**", "ourorg/a/b", true),
        // `?` is exactly one character, never `/`.
        ("v?", "v1", true),
        ("v?", "v", false),
        ("v?", "v12", false),
        ("a?b", "a/b", false),
        ("??", "éé", true),
        ("v?.*", "v1.2", true),
        ("v?.*", "v12.3", false),
        // Empty values.
        ("*", "", true),
        ("**", "", true),
        ("?", "", false),
        ("", "", true),
        ("", "x", false),
        ("*", "a/b", false),
        ("**", "a/b", true),
        // Everything else is literal: no regex, no classes, no escapes.
        ("v1.2", "v1.2", true),
        ("v1.2", "v1x2", false),
        ("[ab]", "[ab]", true),
        ("[ab]", "a", false),
        ("a+", "a+", true),
        ("a+", "aa", false),
        ("^main$", "^main$", true),
        ("^main$", "main", false),
        ("(x|y)", "(x|y)", true),
        ("a\\*", "a\\bc", true),
        ("a\\*", "a*", false),
        ("{a,b}", "a", false),
        // Three or more stars mean `**`.
        ("a/***", "a/b/c", true),
        ("a/****/z", "a/b/c/z", true),
        // Stars in the middle, several wildcards, backtracking-shaped cases.
        ("*/*", "a/b", true),
        ("*/*", "a/b/c", false),
        ("**/c", "a/b/c", true),
        ("a/**/c", "a/c", false),
        ("a/**/c", "a//c", true),
        ("a/**c", "a/c", true),
        ("*a*a*b", "xaxab", true),
        ("*a*a*b", "xaxb", false),
        ("*.yml@refs/heads/main", "ci.yml@refs/heads/main", true),
        (
            "ourorg/*/.github/workflows/*.yml@refs/heads/main",
            "ourorg/app/.github/workflows/deploy.yml@refs/heads/main",
            true,
        ),
        (
            "ourorg/*/.github/workflows/*.yml@refs/heads/main",
            "ourorg/app/.github/workflows/x/deploy.yml@refs/heads/main",
            false,
        ),
        // Exact claims are case-sensitive.
        ("refs/heads/Main", "refs/heads/main", false),
        ("refs/heads/main", "refs/heads/MAIN", false),
    ];
    assert_table(cases, CaseFold::Exact);
}

#[test]
fn case_insensitive_claims_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("OurOrg/App", "ourorg/app", true),
        ("ourorg/app", "OURORG/APP", true),
        ("OurOrg/*", "ourorg/app", true),
        ("ourorg/*", "OurOrg/App", true),
        ("ourorg/*", "OurOrg/a/b", false),
        ("ourorg/app", "ourorg/app2", false),
        // Only ASCII folds: `É` and `é` stay distinct.
        ("é", "É", false),
        ("é", "é", true),
    ];
    assert_table(cases, CaseFold::AsciiInsensitive);
}

#[test]
fn case_folding_follows_the_claim() {
    for claim in [
        "repository",
        "repository_owner",
        "actor",
        "environment",
        "enterprise",
    ] {
        assert_eq!(
            CaseFold::for_claim(claim),
            CaseFold::AsciiInsensitive,
            "{claim}"
        );
    }
    for claim in [
        "ref",
        "sha",
        "job_workflow_ref",
        "repository_id",
        "sub",
        "event_name",
    ] {
        assert_eq!(CaseFold::for_claim(claim), CaseFold::Exact, "{claim}");
    }
}

#[test]
fn compiles_to_an_inspectable_token_sequence() {
    let glob = Glob::compile("Ab?*/**x***", CaseFold::AsciiInsensitive).unwrap();
    assert_eq!(
        glob.tokens(),
        &[
            Token::Literal('a'),
            Token::Literal('b'),
            Token::Question,
            Token::Star,
            Token::Literal('/'),
            Token::DoubleStar,
            Token::Literal('x'),
            Token::DoubleStar,
        ]
    );
    assert_eq!(glob.source(), "Ab?*/**x***");
    assert!(!glob.is_literal());
    assert!(
        Glob::compile("refs/heads/main", CaseFold::Exact)
            .unwrap()
            .is_literal()
    );
}

#[test]
fn length_limit() {
    let longest = "a".repeat(MAX_PATTERN_CHARS);
    assert!(
        Glob::compile(&longest, CaseFold::Exact)
            .unwrap()
            .matches(&longest)
    );
    let star_heavy = "*a".repeat(MAX_PATTERN_CHARS / 2);
    assert!(
        Glob::compile(&star_heavy, CaseFold::Exact)
            .unwrap()
            .matches(&"a".repeat(600))
    );
    assert!(Glob::compile(&format!("{longest}a"), CaseFold::Exact).is_err());
}

#[test]
fn pathological_patterns_stay_linear() {
    let value = "a".repeat(4096);
    let patterns = [
        "*a*a*a*a*a*b",
        "**a**a**a**a**a**b",
        "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
        "?*?*?*?*?*?*?*?*b",
    ];
    let started = Instant::now();
    for pattern in patterns {
        let glob = Glob::compile(pattern, CaseFold::Exact).unwrap();
        assert!(!glob.matches(&value), "{pattern}");
        // Same shape, matching this time: the last character decides.
        let hit = format!("{value}b");
        assert!(glob.matches(&hit), "{pattern}");
    }
    // Backtracking would take astronomically long; linear takes microseconds.
    // The bound is generous for a debug build on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
