//! The space of claim sets, and exact questions about regions of it.
//!
//! A rule denotes a *product*: one language per claim (see `lang.rs`), the
//! claims it does not mention unconstrained. A role grants the union of its
//! allow products minus the union of its deny products. Every question
//! `policy diff` and `policy check` ask reduces to one primitive: is there a
//! point in a product `P` outside every product of a list `E₁ … Eₖ`?
//!
//! [`Space::find_point`] answers it by splitting: if `P` overlaps `E₁`, then
//! `P ∖ E₁` is the disjoint union, over the claims `c₁ … cₘ` that `E₁`
//! constrains, of `P` with `c₁ … cᵢ₋₁` kept inside `E₁` and `cᵢ` moved outside
//! it; each non-empty piece is searched against `E₂ … Eₖ`, depth first. Products
//! disjoint from the next `Eⱼ` skip it, and a product inside some `Eⱼ` is dead,
//! so real policies (whose rules mostly share or clearly differ in their
//! claims) decide after a handful of steps. The worst case is exponential in
//! the number of excluded rules, so every search runs under a step budget and
//! answers [`Undecided`] rather than hang.
//!
//! Trust: the compiled policy (`model.rs`). Guarantee: a returned point lies in
//! `P` and outside every `Eⱼ` as the languages define them, and "no point" is
//! only returned after the whole search space was covered. Callers still
//! confirm every witness with `Policy::evaluate`, so a bug here can produce
//! "undecided", never a wrong verdict with a witness.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::claims::UnverifiedClaims;
use crate::context::{ContextAnswer, ContextAnswers, ContextCondition};
use crate::policy::github::RepositoryEntry;
use crate::policy::glob::{CaseFold, Glob, Token};
use crate::policy::model::{Role, RoleKind, Rule};

use super::lang::{Alphabet, Dfa, Undecided};

/// Default step budget of one [`Space`]: far above what policies of hundreds
/// of rules need, and still a fraction of a second.
pub(crate) const DEFAULT_BUDGET: u64 = 200_000;

/// Values a witness prefers for a claim when its language allows them, so
/// witnesses read like real tokens rather than shortest strings.
const SAMPLE_VALUES: &[(&str, &str)] = &[
    ("event_name", "push"),
    ("ref", "refs/heads/main"),
    ("ref_type", "branch"),
    ("runner_environment", "github-hosted"),
    ("repository_visibility", "private"),
    ("ref_protected", "true"),
];

/// Axes that model facts about the token's commit start with this, which no
/// claim name can (claim names are `[a-z0-9_]+`).
const CONTEXT_AXIS: &str = "context:";

/// The axis of `checks_passed` for a (check, app) pair:
/// `context:checks_passed:APP:NAME` (APP empty when any App counts; an App
/// slug never holds `:`, so the name is what follows the second `:`). Its
/// value is [`PASSED`] when that check passed, anything else or absent when
/// not: each (check, app) is its own boolean dimension.
const CHECK_AXIS: &str = "context:checks_passed:";

/// The value of a check axis that means "passed".
const PASSED: &str = "pass";

/// The axis of `pull_request_approvals`: an integer dimension, the number
/// of approvals written in unary as the length of the value (`≥ N` is the
/// pattern of N `?` and a `*`); a value with `/` is a pull request with no
/// approval, absent is no pull request.
const APPROVALS_AXIS: &str = "context:pull_request_approvals";

/// The axis and pattern that model one context condition.
fn context_pattern(condition: &ContextCondition) -> Option<(String, Glob)> {
    let (axis, source) = match condition {
        ContextCondition::CheckPassed { name, app } => (
            format!("{CHECK_AXIS}{}:{name}", app.as_deref().unwrap_or_default()),
            PASSED.to_owned(),
        ),
        ContextCondition::PullRequestApprovals(count) => (
            APPROVALS_AXIS.to_owned(),
            "?".repeat(usize::try_from(*count).ok()?) + "*",
        ),
    };
    let glob = Glob::compile(&source, CaseFold::Exact).ok()?;
    Some((axis, glob))
}

/// What a role grants beyond its rules: a `github` role's token reaches the
/// repositories of the token's owner, so it grants only tokens whose
/// `repository` claim is `owner/name` and whose owner is that of every
/// `owner/name` entry (each pattern must match). Nothing for an AWS role.
fn implied_by(role: &Role) -> Vec<Glob> {
    let RoleKind::GitHub(github) = &role.kind else {
        return Vec::new();
    };
    let fold = CaseFold::for_claim("repository");
    std::iter::once("?*/?*".to_owned())
        .chain(github.repositories.iter().filter_map(|entry| match entry {
            RepositoryEntry::Own => None,
            RepositoryEntry::Named { owner, .. } => Some(format!("{owner}/?*")),
        }))
        .filter_map(|source| Glob::compile(&source, fold).ok())
        .collect()
}

/// An interned language of one axis.
type LangId = u32;

/// One claim: its alphabet and the languages built over it so far.
struct Axis {
    name: String,
    alphabet: Alphabet,
    langs: Vec<Dfa>,
    ids: HashMap<Dfa, LangId>,
    meets: HashMap<(LangId, LangId), LangId>,
    complements: HashMap<LangId, LangId>,
    conditions: HashMap<Vec<String>, LangId>,
    full: LangId,
    empty: LangId,
}

impl Axis {
    fn new(name: String, alphabet: Alphabet) -> Self {
        let mut axis = Self {
            name,
            langs: Vec::new(),
            ids: HashMap::new(),
            meets: HashMap::new(),
            complements: HashMap::new(),
            conditions: HashMap::new(),
            full: 0,
            empty: 0,
            alphabet,
        };
        axis.full = axis.intern(Dfa::full(&axis.alphabet));
        axis.empty = axis.intern(Dfa::empty(&axis.alphabet));
        axis
    }

    fn intern(&mut self, dfa: Dfa) -> LangId {
        if let Some(id) = self.ids.get(&dfa) {
            return *id;
        }
        let id = LangId::try_from(self.langs.len()).unwrap_or(LangId::MAX);
        self.langs.push(dfa.clone());
        self.ids.insert(dfa, id);
        id
    }

    fn lang(&self, id: LangId) -> Option<&Dfa> {
        self.langs.get(id as usize)
    }

    fn condition(&mut self, globs: &[&Glob]) -> Result<LangId, Undecided> {
        let mut key: Vec<String> = globs.iter().map(|glob| glob.source().to_owned()).collect();
        key.sort();
        key.dedup();
        if let Some(id) = self.conditions.get(&key) {
            return Ok(*id);
        }
        let dfa = Dfa::from_globs(&self.name, &self.alphabet, globs)?;
        let id = self.intern(dfa);
        self.conditions.insert(key, id);
        Ok(id)
    }

    fn meet(&mut self, left: LangId, right: LangId) -> Result<LangId, Undecided> {
        if left == right || right == self.full {
            return Ok(left);
        }
        if left == self.full {
            return Ok(right);
        }
        if left == self.empty || right == self.empty {
            return Ok(self.empty);
        }
        let key = (left.min(right), left.max(right));
        if let Some(id) = self.meets.get(&key) {
            return Ok(*id);
        }
        let (Some(a), Some(b)) = (self.lang(left), self.lang(right)) else {
            return Err(Undecided::Unconfirmed("unknown language id".into()));
        };
        let dfa = a.intersect(b, &self.name)?;
        let id = self.intern(dfa);
        self.meets.insert(key, id);
        Ok(id)
    }

    fn complement(&mut self, id: LangId) -> Result<LangId, Undecided> {
        if let Some(done) = self.complements.get(&id) {
            return Ok(*done);
        }
        let Some(dfa) = self.lang(id) else {
            return Err(Undecided::Unconfirmed("unknown language id".into()));
        };
        let complement = self.intern(dfa.complement());
        self.complements.insert(id, complement);
        self.complements.insert(complement, id);
        Ok(complement)
    }

    /// A value of the language: a sample if allowed, else a shortest tidy
    /// string (see [`Dfa::tidy_strings`]), else a shortest non-empty string,
    /// else the empty string, else absent. `None` when the language is empty.
    fn pick(&self, id: LangId) -> Option<Option<String>> {
        let dfa = self.lang(id)?;
        for (claim, sample) in SAMPLE_VALUES {
            if *claim == self.name && dfa.contains(&self.alphabet, Some(sample)) {
                return Some(Some((*sample).to_owned()));
            }
        }
        let tidy = Dfa::tidy_strings(&self.alphabet);
        if let Some(value) = dfa
            .intersect(&tidy, &self.name)
            .ok()
            .and_then(|tidy| tidy.shortest(&self.alphabet, true))
        {
            return Some(Some(value));
        }
        if let Some(value) = dfa
            .shortest(&self.alphabet, true)
            .or_else(|| dfa.shortest(&self.alphabet, false))
        {
            return Some(Some(value));
        }
        dfa.has_absent().then_some(None)
    }
}

/// A product of per-claim languages: one language id per axis of its [`Space`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Product(Vec<LangId>);

/// The grant set of a role as products: `∪ allow ∖ ∪ deny`.
#[derive(Clone, Debug)]
pub(crate) struct Grants {
    pub(crate) allow: Vec<Product>,
    pub(crate) deny: Vec<Product>,
}

/// A concrete claim set: every claim some rule (or query) mentions, with its
/// value, `None` meaning the claim is absent from the token; and, when the
/// rules have context conditions, the facts about the token's commit.
///
/// Serialised as the JSON object of its claims (a `policy explain --claims`
/// file), plus, when there are commit facts, a `"$context"` member (not a
/// claim name) listing them: `{"checks": [{"name", "app", "passed"}],
/// "pull_request": null | {"approvals": N}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Witness {
    /// Claim name → value; `None` (JSON `null`) = the token lacks the claim.
    pub claims: BTreeMap<String, Option<String>>,
    /// Facts about the token's commit, for the context conditions.
    pub commit: CommitFacts,
}

/// What a witness says about the token's commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitFacts {
    /// (check name, App slug or `None` for any App) → whether it passed.
    pub checks: BTreeMap<(String, Option<String>), bool>,
    /// `None`: no rule asks about approvals; `Some(None)`: the commit has
    /// no pull request; `Some(Some(n))`: its pull request has `n` approvals.
    pub pull_request: Option<Option<u64>>,
}

impl CommitFacts {
    /// Whether no rule asks anything about the commit.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.pull_request.is_none()
    }

    fn record(&mut self, axis: &str, value: Option<&str>) {
        if axis == APPROVALS_AXIS {
            self.pull_request = Some(value.map(|value| {
                if value.contains('/') {
                    0
                } else {
                    value.chars().count() as u64
                }
            }));
        } else if let Some((app, name)) = axis
            .strip_prefix(CHECK_AXIS)
            .and_then(|rest| rest.split_once(':'))
        {
            let app = (!app.is_empty()).then(|| app.to_owned());
            self.checks
                .insert((name.to_owned(), app), value == Some(PASSED));
        }
    }

    fn one_line(&self) -> String {
        let mut facts: Vec<String> = self
            .checks
            .iter()
            .map(|((name, app), passed)| {
                let state = if *passed { "passed" } else { "not passed" };
                match app {
                    Some(app) => format!("`{name}` by app `{app}` {state}"),
                    None => format!("`{name}` {state}"),
                }
            })
            .collect();
        match self.pull_request {
            None => {}
            Some(None) => facts.push("no pull request".to_owned()),
            Some(Some(count)) => {
                facts.push(format!("a pull request with {count} approvals"));
            }
        }
        facts.join(", ")
    }
}

impl serde::Serialize for Witness {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &self.claims {
            map.serialize_entry(name, value)?;
        }
        if !self.commit.is_empty() {
            let checks: Vec<serde_json::Value> = self
                .commit
                .checks
                .iter()
                .map(|((name, app), passed)| {
                    serde_json::json!({"name": name, "app": app, "passed": passed})
                })
                .collect();
            let mut context = serde_json::Map::new();
            context.insert("checks".to_owned(), serde_json::Value::from(checks));
            if let Some(pull_request) = self.commit.pull_request {
                context.insert(
                    "pull_request".to_owned(),
                    pull_request.map_or(
                        serde_json::Value::Null,
                        |approvals| serde_json::json!({ "approvals": approvals }),
                    ),
                );
            }
            map.serialize_entry("$context", &context)?;
        }
        map.end()
    }
}

impl Witness {
    /// The answers these commit facts give to `conditions`, as GitHub would.
    pub fn answers(&self, conditions: &[ContextCondition]) -> ContextAnswers {
        let mut answers = ContextAnswers::default();
        for condition in conditions {
            let answer = match condition {
                ContextCondition::CheckPassed { name, app } => {
                    if self.commit.checks.get(&(name.clone(), app.clone())) == Some(&true) {
                        ContextAnswer::Pass("passed".to_owned())
                    } else {
                        ContextAnswer::Fail("not passed".to_owned())
                    }
                }
                ContextCondition::PullRequestApprovals(wanted) => {
                    match self.commit.pull_request.flatten() {
                        Some(count) if count >= u64::from(*wanted) => {
                            ContextAnswer::Pass(format!("{count} approvals"))
                        }
                        Some(count) => ContextAnswer::Fail(format!("{count} approvals")),
                        None => ContextAnswer::Fail("no pull request".to_owned()),
                    }
                }
            };
            answers.insert(condition.clone(), answer);
        }
        answers
    }

    /// The claim set a token with exactly these claims would have.
    pub fn to_claim_set(&self) -> UnverifiedClaims {
        let mut set = UnverifiedClaims::default();
        for (name, value) in &self.claims {
            if let Some(value) = value {
                set.insert(name.clone(), value.clone());
            }
        }
        set
    }

    /// `name="value"` pairs on one line, absent claims as `name=<absent>`,
    /// then the commit facts, if any (`; commit: `dependency-scan` not passed`).
    pub fn one_line(&self) -> String {
        let claims = self
            .claims
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}={value:?}"),
                None => format!("{name}=<absent>"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        if self.commit.is_empty() {
            claims
        } else {
            format!("{claims}; commit: {}", self.commit.one_line())
        }
    }
}

/// The claims of one or more policies, with the machinery to decide questions
/// about them. All products compared must come from the same space.
pub(crate) struct Space {
    axes: Vec<Axis>,
    index: BTreeMap<String, usize>,
    steps: u64,
    budget: u64,
}

impl Space {
    /// A space over every claim the given patterns constrain. Every pattern any
    /// later question uses must be among them: it fixes the alphabets.
    pub(crate) fn new<'g>(patterns: impl IntoIterator<Item = (&'g str, &'g Glob)>) -> Self {
        let mut chars: BTreeMap<String, Vec<char>> = BTreeMap::new();
        for (claim, glob) in patterns {
            let entry = chars.entry(claim.to_owned()).or_default();
            entry.extend(glob.tokens().iter().filter_map(|token| match token {
                Token::Literal(ch) => Some(*ch),
                Token::Question | Token::Star | Token::DoubleStar => None,
            }));
        }
        let mut axes = Vec::new();
        let mut index = BTreeMap::new();
        for (claim, chars) in chars {
            index.insert(claim.clone(), axes.len());
            let alphabet = Alphabet::new(CaseFold::for_claim(&claim), chars);
            axes.push(Axis::new(claim, alphabet));
        }
        Self {
            axes,
            index,
            steps: 0,
            budget: DEFAULT_BUDGET,
        }
    }

    /// The patterns of every rule of `roles`, for [`Space::new`].
    pub(crate) fn patterns_of(roles: &[Role]) -> impl Iterator<Item = (&str, &Glob)> {
        roles
            .iter()
            .flat_map(|role| role.allow.iter().chain(&role.deny))
            .flat_map(|rule| &rule.conditions)
            .flat_map(|condition| {
                condition
                    .patterns
                    .iter()
                    .map(move |glob| (condition.claim.as_str(), glob))
            })
    }

    /// The axes and patterns the rules of `roles` imply beyond their claim
    /// patterns, for [`Space::new`] (owned: they are not written as
    /// patterns in the policy): those of the context conditions, and the
    /// `repository` a `github` role needs (see [`implied_by`]).
    pub(crate) fn context_patterns(roles: &[Role]) -> impl Iterator<Item = (String, Glob)> {
        let context = roles
            .iter()
            .flat_map(|role| &role.allow)
            .flat_map(|rule| &rule.context)
            .filter_map(context_pattern);
        let implied = roles
            .iter()
            .flat_map(implied_by)
            .map(|glob| ("repository".to_owned(), glob));
        context.chain(implied)
    }

    /// Sets the step budget of each later question (`grant_*`).
    pub(crate) fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
    }

    /// Steps taken by the last question.
    #[cfg(test)]
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// The product of everything.
    pub(crate) fn everything(&self) -> Product {
        Product(self.axes.iter().map(|axis| axis.full).collect())
    }

    /// The product a rule denotes.
    pub(crate) fn rule(&mut self, rule: &Rule) -> Result<Product, Undecided> {
        let mut product = self.everything();
        for condition in &rule.conditions {
            let globs: Vec<&Glob> = condition.patterns.iter().collect();
            let constrained = self.condition(&condition.claim, &globs)?;
            product = self.meet(&product, &constrained)?;
        }
        for condition in &rule.context {
            let (axis, glob) = context_pattern(condition).ok_or_else(|| {
                Undecided::Unconfirmed(format!("no model for context condition {condition}"))
            })?;
            let constrained = self.condition(&axis, &[&glob])?;
            product = self.meet(&product, &constrained)?;
        }
        Ok(product)
    }

    /// The product "claim matches one of `globs`, everything else free".
    pub(crate) fn condition(&mut self, claim: &str, globs: &[&Glob]) -> Result<Product, Undecided> {
        let mut product = self.everything();
        let Some(&axis_index) = self.index.get(claim) else {
            return Err(Undecided::Unconfirmed(format!(
                "claim `{claim}` is not part of the analysed space"
            )));
        };
        if let (Some(axis), Some(slot)) =
            (self.axes.get_mut(axis_index), product.0.get_mut(axis_index))
        {
            *slot = axis.condition(globs)?;
        }
        Ok(product)
    }

    /// The grant set of a role.
    pub(crate) fn grants(&mut self, role: &Role) -> Result<Grants, Undecided> {
        let mut implied = self.everything();
        for glob in implied_by(role) {
            let constrained = self.condition("repository", &[&glob])?;
            implied = self.meet(&implied, &constrained)?;
        }
        let allow = role
            .allow
            .iter()
            .map(|rule| {
                let product = self.rule(rule)?;
                self.meet(&product, &implied)
            })
            .collect::<Result<_, _>>()?;
        let deny = role
            .deny
            .iter()
            .map(|rule| self.rule(rule))
            .collect::<Result<_, _>>()?;
        Ok(Grants { allow, deny })
    }

    /// The intersection of two products.
    pub(crate) fn meet(&mut self, left: &Product, right: &Product) -> Result<Product, Undecided> {
        let mut out = Vec::with_capacity(self.axes.len());
        for ((axis, a), b) in self.axes.iter_mut().zip(&left.0).zip(&right.0) {
            out.push(axis.meet(*a, *b)?);
        }
        Ok(Product(out))
    }

    /// Whether `inner ⊆ outer`, axis by axis (exact for non-empty `inner`).
    fn contains(&mut self, outer: &Product, inner: &Product) -> Result<bool, Undecided> {
        for ((axis, o), i) in self.axes.iter_mut().zip(&outer.0).zip(&inner.0) {
            if axis.meet(*o, *i)? != *i {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn is_empty(&self, product: &Product) -> bool {
        self.axes
            .iter()
            .zip(&product.0)
            .any(|(axis, id)| *id == axis.empty)
    }

    /// A point of `product` outside every product of `excluded`, if one exists.
    pub(crate) fn find_point(
        &mut self,
        product: &Product,
        excluded: &[Product],
    ) -> Result<Option<Product>, Undecided> {
        let mut dead = HashSet::new();
        self.search(product.clone(), excluded, 0, &mut dead)
    }

    fn search(
        &mut self,
        product: Product,
        excluded: &[Product],
        from: usize,
        dead: &mut HashSet<(Product, usize)>,
    ) -> Result<Option<Product>, Undecided> {
        self.steps += 1;
        if self.steps > self.budget {
            return Err(Undecided::Budget(self.budget));
        }
        if self.is_empty(&product) {
            return Ok(None);
        }
        // Skip the excluded products this one does not overlap.
        let mut cursor = from;
        let (position, exclude) = loop {
            let Some(exclude) = excluded.get(cursor) else {
                return Ok(Some(product));
            };
            let overlap = self.meet(&product, exclude)?;
            if !self.is_empty(&overlap) {
                break (cursor, exclude);
            }
            cursor += 1;
        };
        let key = (product.clone(), position);
        if dead.contains(&key) {
            return Ok(None);
        }
        // A product inside any remaining excluded product has no point to offer;
        // checking it first keeps a rule repeated further down from multiplying
        // the pieces.
        for later in excluded.iter().skip(position) {
            if self.contains(later, &product)? {
                dead.insert(key);
                return Ok(None);
            }
        }
        // Split `product ∖ exclude` into disjoint pieces, one per claim `exclude`
        // constrains (a claim it leaves free cannot put a point outside it).
        let mut inside = product.clone();
        for axis_index in 0..self.axes.len() {
            let (Some(&mine), Some(&theirs)) =
                (product.0.get(axis_index), exclude.0.get(axis_index))
            else {
                continue;
            };
            let Some(axis) = self.axes.get_mut(axis_index) else {
                continue;
            };
            if theirs == axis.full {
                continue;
            }
            let outside = axis.complement(theirs)?;
            let piece_lang = axis.meet(mine, outside)?;
            let inside_lang = axis.meet(mine, theirs)?;
            if piece_lang != axis.empty {
                let mut piece = inside.clone();
                if let Some(slot) = piece.0.get_mut(axis_index) {
                    *slot = piece_lang;
                }
                if let Some(found) = self.search(piece, excluded, position + 1, dead)? {
                    return Ok(Some(found));
                }
            }
            if let Some(slot) = inside.0.get_mut(axis_index) {
                *slot = inside_lang;
            }
        }
        dead.insert(key);
        Ok(None)
    }

    /// A point granted by `grants` and outside `minus` (`None`: outside nothing).
    pub(crate) fn grant_difference(
        &mut self,
        grants: &Grants,
        minus: Option<&Grants>,
    ) -> Result<Option<Product>, Undecided> {
        self.steps = 0;
        for allow in &grants.allow {
            // Outside `minus` means outside every allow rule of it…
            let mut excluded = grants.deny.clone();
            if let Some(minus) = minus {
                excluded.extend(minus.allow.iter().cloned());
            }
            if let Some(point) = self.find_point(allow, &excluded)? {
                return Ok(Some(point));
            }
            // …or inside one of its deny rules.
            for deny in minus.map_or(&[][..], |minus| &minus.deny) {
                let both = self.meet(allow, deny)?;
                if let Some(point) = self.find_point(&both, &grants.deny)? {
                    return Ok(Some(point));
                }
            }
        }
        Ok(None)
    }

    /// A point granted by both `left` and `right`.
    pub(crate) fn grant_intersection(
        &mut self,
        left: &Grants,
        right: &Grants,
    ) -> Result<Option<Product>, Undecided> {
        self.steps = 0;
        let excluded: Vec<Product> = left.deny.iter().chain(&right.deny).cloned().collect();
        for a in &left.allow {
            for b in &right.allow {
                let both = self.meet(a, b)?;
                if let Some(point) = self.find_point(&both, &excluded)? {
                    return Ok(Some(point));
                }
            }
        }
        Ok(None)
    }

    /// A point granted by `grants` inside `within`, with the index of an allow
    /// rule that covers it.
    pub(crate) fn grant_within(
        &mut self,
        grants: &Grants,
        within: &Product,
    ) -> Result<Option<(usize, Product)>, Undecided> {
        self.steps = 0;
        for (index, allow) in grants.allow.iter().enumerate() {
            let both = self.meet(allow, within)?;
            if let Some(point) = self.find_point(&both, &grants.deny)? {
                return Ok(Some((index, point)));
            }
        }
        Ok(None)
    }

    /// A concrete claim set inside a non-empty product.
    pub(crate) fn witness(&self, product: &Product) -> Result<Witness, Undecided> {
        let mut claims = BTreeMap::new();
        let mut commit = CommitFacts::default();
        for (axis, id) in self.axes.iter().zip(&product.0) {
            let value = axis.pick(*id).ok_or_else(|| {
                Undecided::Unconfirmed(format!("empty language for claim `{}`", axis.name))
            })?;
            if axis.name.starts_with(CONTEXT_AXIS) {
                commit.record(&axis.name, value.as_deref());
            } else {
                claims.insert(axis.name.clone(), value);
            }
        }
        Ok(Witness { claims, commit })
    }

    /// Whether two products denote the same set (equal ids on every axis, since
    /// languages are interned canonically).
    #[cfg(test)]
    pub(crate) fn same(&self, left: &Product, right: &Product) -> bool {
        left == right
    }

    /// The language of one claim of a product, for tests.
    #[cfg(test)]
    pub(crate) fn lang_of(&self, product: &Product, claim: &str) -> Option<&Dfa> {
        let index = *self.index.get(claim)?;
        let axis = self.axes.get(index)?;
        axis.lang(*product.0.get(index)?)
    }
}
