//! The values one claim may take, as a regular language: canonical minimal DFAs.
//!
//! A claim's value is either a string or absent. Patterns (see `glob.rs`) are
//! regular languages over characters; a condition (any of its patterns) is their
//! union; a claim a rule does not mention is unconstrained. Absence is modelled
//! as one extra value, ⊥, outside every pattern's language: a condition never
//! matches an absent claim, but "unconstrained" and complements contain it.
//!
//! Characters: every pattern of a claim distinguishes only its literal
//! characters, `/` (which `*` and `?` refuse) and "anything else". So each claim
//! gets its own finite [`Alphabet`] of classes: one per literal character that
//! appears in any of the claim's patterns, one for `/`, and one "other" class
//! standing for every remaining character. Values of case-insensitive claims are
//! ASCII-lowercased before they are classified, exactly as the matcher folds
//! them, so a language there is a language of folded strings.
//!
//! Invariants: every [`Dfa`] is complete, every state is reachable from the start
//! state 0, it is minimal, and its states are numbered in breadth-first order
//! over the classes. Two DFAs over the same alphabet therefore accept the same
//! language exactly when they are equal, which lets callers intern them and turn
//! language equality into a comparison of ids. Construction is bounded
//! ([`MAX_DFA_STATES`]) and reports [`Undecided`] instead of growing without
//! limit.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::policy::glob::{CaseFold, Glob, Token};

/// Most states one DFA may have. Patterns like `**a??????????` need a state per
/// suffix they must remember; real policies stay in the tens.
pub(crate) const MAX_DFA_STATES: usize = 4096;

/// Characters tried, in order, to stand for the "other" class in witnesses:
/// readable, and unchanged by ASCII case folding.
const OTHER_CANDIDATES: &str = "xyzqjkvwabcdefghilmnoprstu0123456789-_.";

/// Why a question about languages was not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undecided {
    /// A DFA would exceed [`MAX_DFA_STATES`] states.
    #[error("an automaton for claim `{0}` would exceed {MAX_DFA_STATES} states")]
    TooManyStates(String),
    /// The search for a witness took more steps than its budget.
    #[error("the search exceeded its budget of {0} steps")]
    Budget(u64),
    /// A witness the algebra produced did not behave as predicted when the real
    /// policy evaluated it: a bug in the analysis, never a verdict.
    #[error("internal error: {0}")]
    Unconfirmed(String),
}

/// The character classes one claim's patterns can tell apart.
#[derive(Clone, Debug)]
pub(crate) struct Alphabet {
    fold: CaseFold,
    /// Sorted, distinct, already folded, without `/`.
    literals: Vec<char>,
    /// A character outside `literals` and `/`, unchanged by folding.
    other: char,
}

impl Alphabet {
    /// The alphabet for a claim compared with `fold` whose patterns use `chars`
    /// as literals (folded or not: they are folded here).
    pub(crate) fn new(fold: CaseFold, chars: impl IntoIterator<Item = char>) -> Self {
        let literals: BTreeSet<char> = chars
            .into_iter()
            .map(|ch| fold.fold(ch))
            .filter(|ch| *ch != '/')
            .collect();
        let usable = |ch: &char| *ch != '/' && fold.fold(*ch) == *ch && !literals.contains(ch);
        // The fallback scans upward from U+00C0 (non-ASCII letters are never folded);
        // it ends because `literals` is finite.
        let other = OTHER_CANDIDATES
            .chars()
            .find(usable)
            .or_else(|| (0xC0_u32..).filter_map(char::from_u32).find(usable))
            .unwrap_or('\u{FFFD}');
        Self {
            fold,
            literals: literals.into_iter().collect(),
            other,
        }
    }

    /// Number of classes: the literals, then `/`, then "other".
    pub(crate) fn classes(&self) -> usize {
        self.literals.len() + 2
    }

    fn slash(&self) -> usize {
        self.literals.len()
    }

    /// The class of a value character (folded first, as the matcher does).
    pub(crate) fn class_of(&self, ch: char) -> usize {
        let ch = self.fold.fold(ch);
        if ch == '/' {
            return self.slash();
        }
        self.literals
            .binary_search(&ch)
            .unwrap_or(self.literals.len() + 1)
    }

    /// A character of class `class`, for witnesses.
    fn representative(&self, class: usize) -> char {
        match self.literals.get(class) {
            Some(ch) => *ch,
            None if class == self.slash() => '/',
            None => self.other,
        }
    }
}

/// A complete, minimal, canonically numbered DFA over one claim's [`Alphabet`],
/// plus whether the absent value ⊥ belongs to the language.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Dfa {
    classes: usize,
    /// `next[state * classes + class]`.
    next: Vec<u32>,
    accept: Vec<bool>,
    absent: bool,
}

impl Dfa {
    /// Every value, ⊥ included: a claim no rule constrains.
    pub(crate) fn full(alphabet: &Alphabet) -> Self {
        let classes = alphabet.classes();
        Self {
            classes,
            next: vec![0; classes],
            accept: vec![true],
            absent: true,
        }
    }

    /// No value at all.
    pub(crate) fn empty(alphabet: &Alphabet) -> Self {
        let classes = alphabet.classes();
        Self {
            classes,
            next: vec![0; classes],
            accept: vec![false],
            absent: false,
        }
    }

    /// The values some pattern of `globs` matches; never ⊥.
    pub(crate) fn from_globs(
        claim: &str,
        alphabet: &Alphabet,
        globs: &[&Glob],
    ) -> Result<Self, Undecided> {
        // One NFA for the union: every pattern's token positions side by side,
        // `None` marking a pattern's accepting end.
        let mut positions: Vec<Option<Token>> = Vec::new();
        let mut starts = Vec::new();
        for glob in globs {
            starts.push(positions.len());
            positions.extend(glob.tokens().iter().copied().map(Some));
            positions.push(None);
        }
        let close = |set: &mut BTreeSet<usize>, seeds: &[usize]| {
            // A star may match nothing: standing before it is standing after it.
            for &seed in seeds {
                let mut position = seed;
                set.insert(position);
                while let Some(Some(Token::Star | Token::DoubleStar)) = positions.get(position) {
                    position += 1;
                    set.insert(position);
                }
            }
        };
        let classes = alphabet.classes();
        let slash = alphabet.slash();
        let mut start = BTreeSet::new();
        close(&mut start, &starts);
        let mut ids: HashMap<Vec<usize>, u32> = HashMap::new();
        let mut sets: Vec<Vec<usize>> = Vec::new();
        let start: Vec<usize> = start.into_iter().collect();
        ids.insert(start.clone(), 0);
        sets.push(start);
        let mut next = Vec::new();
        let mut accept = Vec::new();
        let mut index = 0;
        while let Some(set) = sets.get(index).cloned() {
            index += 1;
            accept.push(
                set.iter()
                    .any(|position| matches!(positions.get(*position), Some(None))),
            );
            for class in 0..classes {
                let mut moved = Vec::new();
                for &position in &set {
                    match positions.get(position) {
                        Some(Some(Token::Literal(ch))) if alphabet.class_of(*ch) == class => {
                            moved.push(position + 1);
                        }
                        Some(Some(Token::Question)) if class != slash => moved.push(position + 1),
                        Some(Some(Token::Star)) if class != slash => moved.push(position),
                        Some(Some(Token::DoubleStar)) => moved.push(position),
                        _ => {}
                    }
                }
                let mut target = BTreeSet::new();
                close(&mut target, &moved);
                let target: Vec<usize> = target.into_iter().collect();
                let id = match ids.get(&target) {
                    Some(id) => *id,
                    None => {
                        if sets.len() >= MAX_DFA_STATES {
                            return Err(Undecided::TooManyStates(claim.to_owned()));
                        }
                        let id = state_id(sets.len());
                        ids.insert(target.clone(), id);
                        sets.push(target);
                        id
                    }
                };
                next.push(id);
            }
        }
        Ok(minimize(classes, &next, &accept, false))
    }

    /// Strings that read like path-shaped claim values: non-empty, no empty
    /// `/`-separated segment (so not `refs/heads/` or `a//b`). Witnesses prefer
    /// these; they are a preference only, never part of a verdict.
    pub(crate) fn tidy_strings(alphabet: &Alphabet) -> Self {
        // 0: start, 1: inside a segment (accepting), 2: just after `/`, 3: dead.
        let classes = alphabet.classes();
        let slash = alphabet.slash();
        let mut next = Vec::with_capacity(4 * classes);
        for state in 0..4_u32 {
            for class in 0..classes {
                next.push(match (state, class == slash) {
                    (0..=2, false) => 1,
                    (1, true) => 2,
                    _ => 3,
                });
            }
        }
        minimize(classes, &next, &[false, true, false, false], false)
    }

    /// The complement, ⊥ included. A complete minimal DFA stays minimal and
    /// canonical when its accepting states are flipped.
    pub(crate) fn complement(&self) -> Self {
        Self {
            classes: self.classes,
            next: self.next.clone(),
            accept: self.accept.iter().map(|accept| !accept).collect(),
            absent: !self.absent,
        }
    }

    /// The intersection (both DFAs over the same alphabet).
    pub(crate) fn intersect(&self, other: &Self, claim: &str) -> Result<Self, Undecided> {
        let classes = self.classes;
        let mut ids: HashMap<(u32, u32), u32> = HashMap::new();
        let mut pairs: Vec<(u32, u32)> = vec![(0, 0)];
        ids.insert((0, 0), 0);
        let mut next = Vec::new();
        let mut accept = Vec::new();
        let mut index = 0;
        while let Some(&(left, right)) = pairs.get(index) {
            index += 1;
            accept.push(self.accepts_state(left) && other.accepts_state(right));
            for class in 0..classes {
                let target = (self.step(left, class), other.step(right, class));
                let id = match ids.get(&target) {
                    Some(id) => *id,
                    None => {
                        if pairs.len() >= MAX_DFA_STATES {
                            return Err(Undecided::TooManyStates(claim.to_owned()));
                        }
                        let id = state_id(pairs.len());
                        ids.insert(target, id);
                        pairs.push(target);
                        id
                    }
                };
                next.push(id);
            }
        }
        Ok(minimize(
            classes,
            &next,
            &accept,
            self.absent && other.absent,
        ))
    }

    /// Whether the language has no value at all (every state is reachable, so
    /// any accepting state means some string is accepted).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        !self.absent && !self.accept.iter().any(|accept| *accept)
    }

    /// Whether the language holds `value` (`None` = absent).
    pub(crate) fn contains(&self, alphabet: &Alphabet, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return self.absent;
        };
        let state = value
            .chars()
            .fold(0, |state, ch| self.step(state, alphabet.class_of(ch)));
        self.accepts_state(state)
    }

    /// Whether ⊥ belongs to the language.
    pub(crate) fn has_absent(&self) -> bool {
        self.absent
    }

    /// A shortest string of the language, optionally of at least one character.
    /// Ties are broken by trying the "other" class first (its representative,
    /// usually `x`, reads as a placeholder), then the literals, then `/`, so the
    /// answer is deterministic.
    pub(crate) fn shortest(&self, alphabet: &Alphabet, non_empty: bool) -> Option<String> {
        if !non_empty && self.accepts_state(0) {
            return Some(String::new());
        }
        let slash = alphabet.slash();
        let order: Vec<usize> = std::iter::once(slash + 1)
            .chain(0..slash)
            .chain(std::iter::once(slash))
            .collect();
        // Breadth-first over states reached by at least one character.
        let states = self.accept.len();
        let mut parent: Vec<Option<(u32, usize)>> = vec![None; states];
        let mut seen = vec![false; states];
        let mut queue = VecDeque::new();
        for &class in &order {
            let target = self.step(0, class);
            if let Some(flag) = seen.get_mut(target as usize)
                && !*flag
            {
                *flag = true;
                if let Some(slot) = parent.get_mut(target as usize) {
                    *slot = Some((u32::MAX, class));
                }
                queue.push_back(target);
            }
        }
        while let Some(state) = queue.pop_front() {
            if self.accepts_state(state) {
                let mut chars = Vec::new();
                let mut cursor = state;
                while let Some(Some((from, class))) = parent.get(cursor as usize) {
                    chars.push(alphabet.representative(*class));
                    if *from == u32::MAX {
                        break;
                    }
                    cursor = *from;
                }
                return Some(chars.into_iter().rev().collect());
            }
            for &class in &order {
                let target = self.step(state, class);
                if let Some(flag) = seen.get_mut(target as usize)
                    && !*flag
                {
                    *flag = true;
                    if let Some(slot) = parent.get_mut(target as usize) {
                        *slot = Some((state, class));
                    }
                    queue.push_back(target);
                }
            }
        }
        None
    }

    /// Number of states.
    #[cfg(test)]
    pub(crate) fn states(&self) -> usize {
        self.accept.len()
    }

    fn step(&self, state: u32, class: usize) -> u32 {
        // The table is complete by construction; the fallback is never taken.
        self.next
            .get(state as usize * self.classes + class)
            .copied()
            .unwrap_or(state)
    }

    fn accepts_state(&self, state: u32) -> bool {
        self.accept.get(state as usize).copied().unwrap_or(false)
    }
}

/// State ids fit in `u32` because no DFA exceeds [`MAX_DFA_STATES`].
fn state_id(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Minimises a complete DFA whose states are all reachable from state 0
/// (Moore's partition refinement; the DFAs here are small), then numbers the
/// blocks breadth-first from the start so equal languages give equal DFAs.
fn minimize(classes: usize, next: &[u32], accept: &[bool], absent: bool) -> Dfa {
    let states = accept.len();
    let target = |state: usize, class: usize| -> usize {
        next.get(state * classes + class)
            .map_or(state, |target| *target as usize)
    };
    let mut block: Vec<usize> = accept.iter().map(|accept| usize::from(*accept)).collect();
    let mut count = block.iter().collect::<BTreeSet<_>>().len();
    loop {
        let mut signatures: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut refined = Vec::with_capacity(states);
        for state in 0..states {
            let mut signature = Vec::with_capacity(classes + 1);
            signature.push(block.get(state).copied().unwrap_or(0));
            for class in 0..classes {
                signature.push(block.get(target(state, class)).copied().unwrap_or(0));
            }
            let fresh = signatures.len();
            refined.push(*signatures.entry(signature).or_insert(fresh));
        }
        let refined_count = signatures.len();
        block = refined;
        if refined_count == count {
            break;
        }
        count = refined_count;
    }
    // Canonical numbering: breadth-first over blocks from the start block.
    let mut representative: Vec<Option<usize>> = vec![None; count];
    for (state, block_of) in block.iter().enumerate() {
        if let Some(slot) = representative.get_mut(*block_of)
            && slot.is_none()
        {
            *slot = Some(state);
        }
    }
    let mut number: Vec<Option<u32>> = vec![None; count];
    let mut order: Vec<usize> = Vec::with_capacity(count);
    let start = block.first().copied().unwrap_or(0);
    if let Some(slot) = number.get_mut(start) {
        *slot = Some(0);
    }
    order.push(start);
    let mut index = 0;
    let mut table = Vec::with_capacity(count * classes);
    let mut accepting = Vec::with_capacity(count);
    while let Some(&current) = order.get(index) {
        index += 1;
        let state = representative.get(current).copied().flatten().unwrap_or(0);
        accepting.push(accept.get(state).copied().unwrap_or(false));
        for class in 0..classes {
            let to = block.get(target(state, class)).copied().unwrap_or(0);
            let id = match number.get(to).copied().flatten() {
                Some(id) => id,
                None => {
                    let id = state_id(order.len());
                    if let Some(slot) = number.get_mut(to) {
                        *slot = Some(id);
                    }
                    order.push(to);
                    id
                }
            };
            table.push(id);
        }
    }
    Dfa {
        classes,
        next: table,
        accept: accepting,
        absent,
    }
}
