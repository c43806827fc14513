//! Per-claim languages: construction, emptiness, intersection, difference,
//! shortest witnesses, case folding, canonical form and the size bound.

use crate::policy::diff::lang::{Alphabet, Dfa, MAX_DFA_STATES, Undecided};
use crate::policy::glob::{CaseFold, Glob};

/// The alphabet of `claim` over all of `patterns`, and one DFA per pattern list.
fn langs(claim: &str, lists: &[&[&str]]) -> (Alphabet, Vec<Dfa>) {
    let fold = CaseFold::for_claim(claim);
    let globs: Vec<Vec<Glob>> = lists
        .iter()
        .map(|list| {
            list.iter()
                .map(|pattern| Glob::compile(pattern, fold).unwrap())
                .collect()
        })
        .collect();
    let alphabet = Alphabet::new(
        fold,
        lists
            .iter()
            .flat_map(|list| list.iter().flat_map(|p| p.chars())),
    );
    let dfas = globs
        .iter()
        .map(|list| {
            let refs: Vec<&Glob> = list.iter().collect();
            Dfa::from_globs(claim, &alphabet, &refs).unwrap()
        })
        .collect();
    (alphabet, dfas)
}

fn minus(a: &Dfa, b: &Dfa) -> Dfa {
    a.intersect(&b.complement(), "test").unwrap()
}

fn subset(a: &Dfa, b: &Dfa) -> bool {
    minus(a, b).is_empty()
}

#[test]
fn a_pattern_language_matches_what_the_matcher_matches() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "refs/heads/*",
            &["refs/heads/main", "refs/heads/", "refs/heads/x-y"],
            &["refs/heads/a/b", "refs/tags/v1", "refs/heads"],
        ),
        (
            "refs/heads/**",
            &["refs/heads/a/b", "refs/heads/", "refs/heads/main"],
            &["refs/tags/v1", "refs/heads"],
        ),
        ("v?.*", &["v1.2", "v1."], &["v12.3", "v/.1"]),
        ("*", &["", "anything"], &["a/b"]),
        ("***", &["a/b/c", ""], &[]),
        ("a*b*c", &["abc", "aXbYc", "abbc"], &["ab", "a/bc"]),
    ];
    for (pattern, yes, no) in cases {
        let values: Vec<&str> = yes.iter().chain(no.iter()).copied().collect();
        let (alphabet, dfas) = langs("ref", &[&[pattern]]);
        let glob = Glob::compile(pattern, CaseFold::Exact).unwrap();
        for value in values {
            assert_eq!(
                dfas[0].contains(&alphabet, Some(value)),
                glob.matches(value),
                "{pattern} vs {value:?}"
            );
        }
        for value in *yes {
            assert!(
                dfas[0].contains(&alphabet, Some(value)),
                "{pattern} {value}"
            );
        }
        for value in *no {
            assert!(
                !dfas[0].contains(&alphabet, Some(value)),
                "{pattern} {value}"
            );
        }
        assert!(
            !dfas[0].contains(&alphabet, None),
            "a pattern never matches ⊥"
        );
    }
}

#[test]
fn single_star_is_strictly_inside_double_star() {
    let (alphabet, dfas) = langs("ref", &[&["refs/heads/*"], &["refs/heads/**"]]);
    let (single, double) = (&dfas[0], &dfas[1]);
    assert!(subset(single, double));
    assert!(!subset(double, single));
    let extra = minus(double, single);
    assert_eq!(
        extra.shortest(&alphabet, false).as_deref(),
        Some("refs/heads//"),
        "the shortest value only `**` matches needs a second `/`"
    );
    assert!(extra.contains(&alphabet, Some("refs/heads/feature/x")));
    assert!(!extra.contains(&alphabet, Some("refs/heads/main")));
    let tidy = extra
        .intersect(&Dfa::tidy_strings(&alphabet), "test")
        .unwrap();
    assert_eq!(
        tidy.shortest(&alphabet, true).as_deref(),
        Some("refs/heads/x/x")
    );
}

#[test]
fn emptiness_and_intersection() {
    let (alphabet, dfas) = langs(
        "ref",
        &[&["refs/heads/*"], &["refs/tags/*"], &["a*"], &["*b"]],
    );
    assert!(dfas[0].intersect(&dfas[1], "t").unwrap().is_empty());
    let both = dfas[2].intersect(&dfas[3], "t").unwrap();
    assert!(!both.is_empty());
    assert_eq!(both.shortest(&alphabet, false).as_deref(), Some("ab"));
    assert!(both.contains(&alphabet, Some("axyzb")));
    assert!(!both.contains(&alphabet, Some("a/b")));
    // The complement holds ⊥ and everything the pattern refuses.
    let not_heads = dfas[0].complement();
    assert!(not_heads.contains(&alphabet, None));
    assert!(not_heads.contains(&alphabet, Some("refs/tags/v1")));
    assert!(!not_heads.contains(&alphabet, Some("refs/heads/main")));
    assert!(Dfa::empty(&alphabet).is_empty());
    assert!(!Dfa::full(&alphabet).is_empty());
    assert_eq!(Dfa::full(&alphabet).complement(), Dfa::empty(&alphabet));
}

#[test]
fn equal_languages_give_equal_dfas() {
    let (_, dfas) = langs(
        "ref",
        &[
            &["refs/heads/a", "refs/heads/b"],
            &["refs/heads/b", "refs/heads/a"],
            &["*", "**"],
            &["**"],
            &["***"],
            &["a*", "a"],
            &["a*"],
        ],
    );
    assert_eq!(dfas[0], dfas[1], "order of patterns");
    assert_eq!(dfas[2], dfas[3], "`*` ∪ `**` = `**`");
    assert_eq!(dfas[3], dfas[4], "`***` = `**`");
    assert_eq!(dfas[5], dfas[6], "`a` ⊆ `a*`");
    assert_ne!(dfas[0], dfas[3]);
}

#[test]
fn case_folding_is_part_of_the_language() {
    // `repository` compares ASCII case-insensitively: a case-only edit is no edit.
    let (alphabet, dfas) = langs("repository", &[&["OurOrg/*"], &["ourorg/*"]]);
    assert_eq!(dfas[0], dfas[1]);
    assert!(dfas[0].contains(&alphabet, Some("OURORG/App")));
    assert_eq!(
        dfas[0]
            .intersect(&Dfa::tidy_strings(&alphabet), "t")
            .unwrap()
            .shortest(&alphabet, true)
            .as_deref(),
        Some("ourorg/x"),
        "witnesses of case-insensitive claims are folded"
    );
    // `ref` compares exactly: the same edit changes the language both ways.
    let (alphabet, dfas) = langs("ref", &[&["refs/heads/Main"], &["refs/heads/main"]]);
    assert_ne!(dfas[0], dfas[1]);
    assert!(dfas[0].intersect(&dfas[1], "t").unwrap().is_empty());
    assert!(!dfas[0].contains(&alphabet, Some("refs/heads/main")));
}

#[test]
fn question_mark_and_star_never_cross_a_slash() {
    let (alphabet, dfas) = langs("ref", &[&["a?b"], &["a*b"]]);
    assert!(!dfas[0].contains(&alphabet, Some("a/b")));
    assert!(!dfas[1].contains(&alphabet, Some("a/b")));
    assert!(
        dfas[0].contains(&alphabet, Some("aéb")),
        "any other character"
    );
    assert!(subset(&dfas[0], &dfas[1]));
}

#[test]
fn the_other_class_has_a_representative_outside_the_literals() {
    let (alphabet, dfas) = langs("ref", &[&["xyzqjkvw?"]]);
    let shortest = dfas[0].shortest(&alphabet, false).unwrap();
    let last = shortest.chars().last().unwrap();
    assert!(!"xyzqjkvw/".contains(last), "{shortest}");
    assert!(dfas[0].contains(&alphabet, Some(&shortest)));
}

#[test]
fn automata_are_bounded() {
    // `**a` then n `?` must remember which of the last n+1 characters were `a`.
    let pattern = format!("**a{}", "?".repeat(13));
    let fold = CaseFold::Exact;
    let glob = Glob::compile(&pattern, fold).unwrap();
    let alphabet = Alphabet::new(fold, pattern.chars());
    let err = Dfa::from_globs("ref", &alphabet, &[&glob]).unwrap_err();
    assert_eq!(err, Undecided::TooManyStates("ref".into()));
    // Real patterns stay tiny.
    let (_, dfas) = langs(
        "job_workflow_ref",
        &[&["ourorg/*/.github/workflows/deploy.yml@refs/heads/main"]],
    );
    assert!(dfas[0].states() < MAX_DFA_STATES / 64);
}
