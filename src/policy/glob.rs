//! Patterns of the policy language: GitHub's branch-filter globs, compiled once at load.
//!
//! A pattern always matches the *whole* claim value. `*` matches any run of
//! characters except `/` (possibly empty), `**` any run including `/`, `?` exactly
//! one character other than `/`; every other character is literal. A run of three
//! or more stars means the same as `**`: once a wildcard may cross `/`, more stars
//! cannot widen it further, and reading `***` as `**` + `*` would only describe the
//! same language in a longer way. There is no escape syntax: no claim GitHub sends
//! contains `*` or `?` that a policy would need to match literally.
//!
//! The compiled form is deliberately plain data, a sequence of [`Token`]s plus a
//! [`CaseFold`], and no closures or regular expressions: a later `policy diff`
//! must decide containment between policies, which treats each pattern as a
//! regular language over characters and case folding as a per-claim mapping of
//! the alphabet applied to both the pattern and the value.
//!
//! Matching simulates the pattern's NFA over a bitset of token positions, so it
//! costs O(value length × pattern length) and never backtracks: `*a*a*a*a*b`
//! against kilobytes of `a`s stays linear. The bitset lives on the stack, which is
//! why patterns have a maximum length ([`MAX_PATTERN_CHARS`]).

/// Longest accepted pattern, in characters. Real claim values (refs, workflow
/// refs) are far shorter; the bound keeps the matcher's state on the stack.
pub(crate) const MAX_PATTERN_CHARS: usize = 1024;

/// Words of the position bitset: one bit per token plus the accepting position.
const STATE_WORDS: usize = (MAX_PATTERN_CHARS + 1).div_ceil(64);

/// Claims GitHub treats as case-insensitive names; every other claim (refs, SHAs,
/// workflow refs, ids) compares exactly.
const CASE_INSENSITIVE_CLAIMS: &[&str] = &[
    "repository",
    "repository_owner",
    "actor",
    "environment",
    "enterprise",
];

/// How characters of a claim are compared: the alphabet mapping applied to both
/// pattern literals and values before comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CaseFold {
    /// Characters compare as they are.
    Exact,
    /// ASCII letters compare case-insensitively; other characters exactly.
    AsciiInsensitive,
}

impl CaseFold {
    /// The comparison the policy language prescribes for a claim.
    pub(crate) fn for_claim(claim: &str) -> Self {
        if CASE_INSENSITIVE_CLAIMS.contains(&claim) {
            Self::AsciiInsensitive
        } else {
            Self::Exact
        }
    }

    /// Maps a character to its canonical form under this comparison.
    pub(crate) fn fold(self, ch: char) -> char {
        match self {
            Self::Exact => ch,
            Self::AsciiInsensitive => ch.to_ascii_lowercase(),
        }
    }
}

/// One element of a compiled pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// Exactly this character (already folded by the pattern's [`CaseFold`]).
    Literal(char),
    /// `?`: one character other than `/`.
    Question,
    /// `*`: any run of characters other than `/`, possibly empty.
    Star,
    /// `**` (or more stars): any run of characters, possibly empty.
    DoubleStar,
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    source: Box<str>,
    fold: CaseFold,
    tokens: Box<[Token]>,
    /// No wildcard at all: matching is a plain string comparison.
    literal: bool,
}

/// Why a pattern was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GlobError {
    /// Longer than [`MAX_PATTERN_CHARS`].
    #[error("pattern is longer than {MAX_PATTERN_CHARS} characters")]
    TooLong,
}

impl Glob {
    /// Compiles `source` for a claim compared with `fold`.
    pub(crate) fn compile(source: &str, fold: CaseFold) -> Result<Self, GlobError> {
        if source.chars().count() > MAX_PATTERN_CHARS {
            return Err(GlobError::TooLong);
        }
        let mut tokens = Vec::with_capacity(source.len());
        let mut chars = source.chars().peekable();
        while let Some(ch) = chars.next() {
            let token = match ch {
                '*' => {
                    let mut run = 1;
                    while chars.next_if_eq(&'*').is_some() {
                        run += 1;
                    }
                    if run == 1 {
                        Token::Star
                    } else {
                        Token::DoubleStar
                    }
                }
                '?' => Token::Question,
                other => Token::Literal(fold.fold(other)),
            };
            tokens.push(token);
        }
        let literal = tokens
            .iter()
            .all(|token| matches!(token, Token::Literal(_)));
        Ok(Self {
            source: source.into(),
            fold,
            tokens: tokens.into_boxed_slice(),
            literal,
        })
    }

    /// The pattern as written in the policy.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The comparison this pattern was compiled for.
    pub(crate) fn fold(&self) -> CaseFold {
        self.fold
    }

    /// The compiled token sequence (read by `policy diff` and `policy check`).
    pub(crate) fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether the pattern has no wildcard, i.e. matches exactly one value (up to case folding).
    pub(crate) fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether the pattern matches the whole of `value`.
    pub(crate) fn matches(&self, value: &str) -> bool {
        if self.literal {
            return match self.fold {
                CaseFold::Exact => value == &*self.source,
                CaseFold::AsciiInsensitive => value.eq_ignore_ascii_case(&self.source),
            };
        }
        // Position `i` in the set means "tokens[..i] matched the input read so far".
        let mut current = States::default();
        current.insert(0);
        self.close(&mut current);
        for ch in value.chars() {
            let ch = self.fold.fold(ch);
            let mut next = States::default();
            for position in current.iter() {
                match self.tokens.get(position) {
                    Some(Token::Literal(want)) if *want == ch => next.insert(position + 1),
                    Some(Token::Question) if ch != '/' => next.insert(position + 1),
                    Some(Token::Star) if ch != '/' => next.insert(position),
                    Some(Token::DoubleStar) => next.insert(position),
                    // A mismatch, or the accepting position with input left: this thread dies.
                    _ => {}
                }
            }
            self.close(&mut next);
            if next.is_empty() {
                return false;
            }
            current = next;
        }
        current.contains(self.tokens.len())
    }

    /// Adds the positions reachable without reading input: a star may match
    /// nothing, so standing before it means standing after it too. One forward
    /// pass suffices because closure only ever moves forward.
    fn close(&self, states: &mut States) {
        for (position, token) in self.tokens.iter().enumerate() {
            if matches!(token, Token::Star | Token::DoubleStar) && states.contains(position) {
                states.insert(position + 1);
            }
        }
    }
}

/// A set of pattern positions, as a fixed-size bitset so that matching never allocates.
#[derive(Clone, Copy, Default)]
struct States {
    words: [u64; STATE_WORDS],
}

impl States {
    fn insert(&mut self, position: usize) {
        if let Some(word) = self.words.get_mut(position / 64) {
            *word |= 1 << (position % 64);
        }
    }

    fn contains(&self, position: usize) -> bool {
        self.words
            .get(position / 64)
            .is_some_and(|word| word & (1 << (position % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(index * 64 + bit)
            })
        })
    }
}
