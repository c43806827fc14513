//! `policy diff`: what a policy change does to each role, decided exactly.
//!
//! A role's grant set is a set of claim sets: the union of its allow rules
//! minus the union of its deny rules, each rule a product over claims of
//! regular languages (`space.rs`, `lang.rs`). For every role, matched by name,
//! this module decides whether `G_new ∖ G_old` and `G_old ∖ G_new` are empty,
//! and when one is not, produces a concrete claim set in it: a *witness*. So a
//! reorder of rules, a rule split into equivalent rules, or a case-only edit of
//! a case-insensitive claim compare equal, whatever the text says; and any real
//! widening, however it is written, is found.
//!
//! Trust: the two compiled policies. Guarantees: a verdict other than
//! [`GrantChange::Undecided`] is exact for the language as `docs/policy.md`
//! defines it (absent claims included: an allow rule that stops requiring a
//! claim is wider by the tokens that lack it). Every witness is confirmed with
//! [`Policy::evaluate`] on both policies before it is reported; a witness that
//! does not confirm, or a search that runs out of budget, yields `Undecided`.
//! The comparison is per role as named in a request; it does not model role
//! selection for requests that name no role.

mod lang;
mod space;

#[cfg(test)]
mod tests;

pub use lang::Undecided;
pub use space::{CommitFacts, Witness};
pub(crate) use space::{DEFAULT_BUDGET, Grants, Space};

use super::glob::Glob;
use super::model::{AwsRole, GithubRole, Role, RoleKind};
use super::{Policy, RoleRequest};

/// How a role changed between two policies.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RoleDiff {
    /// Role name.
    pub role: String,
    /// Whether the role is in both policies, or only one.
    pub presence: Presence,
    /// How the set of claim sets the role grants changed.
    pub grants: GrantChange,
    /// A claim set NEW grants and OLD refuses, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub larger_witness: Option<Witness>,
    /// A claim set OLD grants and NEW refuses, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smaller_witness: Option<Witness>,
    /// Why the grant comparison is undecided, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecided: Option<String>,
    /// Changed role settings (ARN, duration, session tags, description).
    pub changes: Vec<FieldChange>,
}

/// Whether a role exists in both policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// In both.
    Kept,
    /// Only in NEW.
    Added,
    /// Only in OLD.
    Removed,
}

/// How a role's grant set changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantChange {
    /// The same claim sets.
    Equal,
    /// NEW grants claim sets OLD refuses, and nothing the other way.
    Larger,
    /// OLD grants claim sets NEW refuses, and nothing the other way.
    Smaller,
    /// Both: some claim sets gained, some lost.
    Both,
    /// Not decided (budget exhausted, or an unconfirmed witness).
    Undecided,
}

/// One changed role setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldChange {
    /// Policy key: `kind`, `role_arn`, `duration_seconds`, `session_tags`,
    /// `repositories`, `permissions`, `description`.
    pub field: &'static str,
    /// Old value, as text.
    pub old: String,
    /// New value, as text.
    pub new: String,
    /// Whether the change needs a reviewer's approval like a broadening does.
    pub review: bool,
    /// One-line reason.
    pub note: String,
}

impl RoleDiff {
    /// Whether this role now grants more, or changed in a way that needs review.
    pub fn broadens(&self) -> bool {
        matches!(self.grants, GrantChange::Larger | GrantChange::Both)
            || self.changes.iter().any(|change| change.review)
    }

    /// Whether nothing at all changed.
    pub fn unchanged(&self) -> bool {
        self.presence == Presence::Kept
            && self.grants == GrantChange::Equal
            && self.changes.is_empty()
    }
}

/// The comparison of two policies, role by role: OLD's roles in file order,
/// then the roles only NEW has.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyDiff {
    /// One entry per role name in either policy.
    pub roles: Vec<RoleDiff>,
}

impl PolicyDiff {
    /// Whether any role broadens or needs review.
    pub fn broadens(&self) -> bool {
        self.roles.iter().any(RoleDiff::broadens)
    }

    /// Whether any role's comparison is undecided.
    pub fn undecided(&self) -> bool {
        self.roles
            .iter()
            .any(|role| role.grants == GrantChange::Undecided)
    }
}

/// Compares two policies role by role; see the module documentation.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    diff_with_budget(old, new, DEFAULT_BUDGET)
}

/// [`diff`] with an explicit step budget per question.
pub(crate) fn diff_with_budget(old: &Policy, new: &Policy, budget: u64) -> PolicyDiff {
    let context: Vec<(String, Glob)> = Space::context_patterns(&old.roles)
        .chain(Space::context_patterns(&new.roles))
        .collect();
    let mut space = Space::new(
        Space::patterns_of(&old.roles)
            .chain(Space::patterns_of(&new.roles))
            .chain(context.iter().map(|(axis, glob)| (axis.as_str(), glob))),
    );
    space.set_budget(budget);
    let mut roles: Vec<RoleDiff> = old
        .roles
        .iter()
        .map(|role| compare(&mut space, old, new, Some(role), new.role(&role.name)))
        .collect();
    roles.extend(
        new.roles
            .iter()
            .filter(|role| old.role(&role.name).is_none())
            .map(|role| compare(&mut space, old, new, None, Some(role))),
    );
    PolicyDiff { roles }
}

fn compare(
    space: &mut Space,
    old_policy: &Policy,
    new_policy: &Policy,
    old: Option<&Role>,
    new: Option<&Role>,
) -> RoleDiff {
    let name = new
        .or(old)
        .map(|role| role.name.clone())
        .unwrap_or_default();
    let presence = match (old, new) {
        (Some(_), Some(_)) => Presence::Kept,
        (None, _) => Presence::Added,
        (Some(_), None) => Presence::Removed,
    };
    let changes = match (old, new) {
        (Some(old), Some(new)) => field_changes(old, new),
        _ => Vec::new(),
    };
    let mut diff = RoleDiff {
        role: name.clone(),
        presence,
        grants: GrantChange::Undecided,
        larger_witness: None,
        smaller_witness: None,
        undecided: None,
        changes,
    };
    let decided = (|| -> Result<(Option<Witness>, Option<Witness>), Undecided> {
        let old_grants = old.map(|role| space.grants(role)).transpose()?;
        let new_grants = new.map(|role| space.grants(role)).transpose()?;
        let larger = match &new_grants {
            Some(grants) => witness_of(space, grants, old_grants.as_ref())?,
            None => None,
        };
        let smaller = match &old_grants {
            Some(grants) => witness_of(space, grants, new_grants.as_ref())?,
            None => None,
        };
        if let Some(witness) = &larger {
            confirm(new_policy, old_policy, &name, witness, "NEW", "OLD")?;
        }
        if let Some(witness) = &smaller {
            confirm(old_policy, new_policy, &name, witness, "OLD", "NEW")?;
        }
        Ok((larger, smaller))
    })();
    match decided {
        Ok((larger, smaller)) => {
            diff.grants = match (&larger, &smaller) {
                (None, None) => GrantChange::Equal,
                (Some(_), None) => GrantChange::Larger,
                (None, Some(_)) => GrantChange::Smaller,
                (Some(_), Some(_)) => GrantChange::Both,
            };
            diff.larger_witness = larger;
            diff.smaller_witness = smaller;
        }
        Err(why) => diff.undecided = Some(why.to_string()),
    }
    diff
}

fn witness_of(
    space: &mut Space,
    grants: &Grants,
    minus: Option<&Grants>,
) -> Result<Option<Witness>, Undecided> {
    space
        .grant_difference(grants, minus)?
        .map(|point| space.witness(&point))
        .transpose()
}

/// Checks a witness against the real evaluator: `granting` must grant the
/// named role and `refusing` must not. A failure is a bug in the analysis.
fn confirm(
    granting: &Policy,
    refusing: &Policy,
    role: &str,
    witness: &Witness,
    granting_label: &str,
    refusing_label: &str,
) -> Result<(), Undecided> {
    let claims = witness.to_claim_set();
    let request = RoleRequest {
        role: Some(role),
        duration_seconds: None,
        permissions: None,
    };
    let answers = |policy: &Policy| witness.answers(&policy.context_conditions(&request));
    if granting
        .evaluate_unverified_in_context(&claims, &request, &answers(granting))
        .is_err()
    {
        return Err(Undecided::Unconfirmed(format!(
            "witness for role `{role}` is not granted by {granting_label}: {}",
            witness.one_line()
        )));
    }
    if refusing
        .evaluate_unverified_in_context(&claims, &request, &answers(refusing))
        .is_ok()
    {
        return Err(Undecided::Unconfirmed(format!(
            "witness for role `{role}` is also granted by {refusing_label}: {}",
            witness.one_line()
        )));
    }
    Ok(())
}

fn field_changes(old: &Role, new: &Role) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    match (&old.kind, &new.kind) {
        (RoleKind::Aws(old), RoleKind::Aws(new)) => aws_changes(old, new, &mut changes),
        (RoleKind::GitHub(old), RoleKind::GitHub(new)) => {
            github_changes(old, new, &mut changes);
        }
        (old_kind, new_kind) => changes.push(FieldChange {
            field: "kind",
            old: old_kind.name().to_owned(),
            new: new_kind.name().to_owned(),
            review: true,
            note: "the same tokens now get another kind of credential, whose reach this diff \
                   cannot compare"
                .to_owned(),
        }),
    }
    if old.description != new.description {
        changes.push(FieldChange {
            field: "description",
            old: old.description.clone().unwrap_or_default(),
            new: new.description.clone().unwrap_or_default(),
            review: false,
            note: "text only".to_owned(),
        });
    }
    changes
}

fn aws_changes(old: &AwsRole, new: &AwsRole, changes: &mut Vec<FieldChange>) {
    if old.arn != new.arn {
        changes.push(FieldChange {
            field: "role_arn",
            old: old.arn.as_str().to_owned(),
            new: new.arn.as_str().to_owned(),
            review: true,
            note: "the same tokens now get a different IAM role, whose permissions this diff cannot see"
                .to_owned(),
        });
    }
    if old.duration_seconds != new.duration_seconds {
        let longer = new.duration_seconds > old.duration_seconds;
        changes.push(FieldChange {
            field: "duration_seconds",
            old: old.duration_seconds.to_string(),
            new: new.duration_seconds.to_string(),
            review: longer,
            note: if longer {
                "credentials live longer".to_owned()
            } else {
                "credentials live shorter".to_owned()
            },
        });
    }
    if old.session_tags != new.session_tags {
        let dropped = old.session_tags && !new.session_tags;
        changes.push(FieldChange {
            field: "session_tags",
            old: old.session_tags.to_string(),
            new: new.session_tags.to_string(),
            review: dropped,
            note: if dropped {
                "CloudTrail no longer shows which repository, ref and run used a credential"
                    .to_owned()
            } else {
                "sessions are now tagged with their claims".to_owned()
            },
        });
    }
}

fn github_changes(old: &GithubRole, new: &GithubRole, changes: &mut Vec<FieldChange>) {
    let listed = |role: &GithubRole| -> Vec<String> {
        role.repositories.iter().map(ToString::to_string).collect()
    };
    let (old_repositories, new_repositories) = (listed(old), listed(new));
    if old_repositories != new_repositories {
        let added = new_repositories.iter().any(|entry| {
            !old_repositories
                .iter()
                .any(|seen| seen.eq_ignore_ascii_case(entry))
        });
        changes.push(FieldChange {
            field: "repositories",
            old: old_repositories.join(", "),
            new: new_repositories.join(", "),
            review: added,
            note: if added {
                "tokens now reach more repositories".to_owned()
            } else {
                "tokens reach fewer repositories".to_owned()
            },
        });
    }
    if old.permissions != new.permissions {
        let more = new.permissions.iter().any(|(name, level)| {
            old.permissions
                .get(name)
                .is_none_or(|before| level > before)
        });
        let show = |permissions: &crate::api::Permissions| {
            permissions
                .iter()
                .map(|(name, level)| format!("{name}:{}", level.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        changes.push(FieldChange {
            field: "permissions",
            old: show(&old.permissions),
            new: show(&new.permissions),
            review: more,
            note: if more {
                "tokens may now do more".to_owned()
            } else {
                "tokens may do less".to_owned()
            },
        });
    }
}
