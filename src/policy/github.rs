//! Roles of kind `github`: GitHub App permission names and levels, and the
//! repositories a role's installation tokens reach.
//!
//! The permission table is GitHub's own: the `app-permissions` schema of the
//! body of `POST /app/installations/{installation_id}/access_tokens`, one
//! entry per property with the levels its enum allows. It is written out here
//! (not read at run time) so that a policy is validated without any file but
//! itself; a test proves it equal to GitHub's published description in
//! `tests/fixtures/github-api/`.
//!
//! Trust: policy text and request bodies are checked against the table; a
//! name or a level GitHub does not define is refused at load (policy) or as a
//! request beyond the role (request), never passed on for GitHub to judge.

use crate::api::Access;

/// The levels a permission allows.
type Levels = &'static [Access];

const R: Levels = &[Access::Read];
const W: Levels = &[Access::Write];
const RW: Levels = &[Access::Read, Access::Write];
const RWA: Levels = &[Access::Read, Access::Write, Access::Admin];

/// Every GitHub App permission an installation token may be asked for, with
/// the levels GitHub defines for it, in the order of GitHub's schema.
pub(crate) const PERMISSIONS: &[(&str, Levels)] = &[
    ("actions", RW),
    ("administration", RW),
    ("artifact_metadata", RW),
    ("attestations", RW),
    ("checks", RW),
    ("code_quality", RW),
    ("codespaces", RW),
    ("contents", RW),
    ("dependabot_secrets", RW),
    ("deployments", RW),
    ("discussions", RW),
    ("environments", RW),
    ("issues", RW),
    ("merge_queues", RW),
    ("metadata", RW),
    ("packages", RW),
    ("pages", RW),
    ("pull_requests", RW),
    ("repository_custom_properties", RW),
    ("repository_hooks", RW),
    ("repository_projects", RWA),
    ("secret_scanning_alerts", RW),
    ("secrets", RW),
    ("security_events", RW),
    ("single_file", RW),
    ("statuses", RW),
    ("vulnerability_alerts", RW),
    ("workflows", W),
    ("custom_properties_for_organizations", RW),
    ("members", RW),
    ("organization_administration", RW),
    ("organization_custom_roles", RW),
    ("organization_custom_org_roles", RW),
    ("organization_custom_properties", RWA),
    ("organization_copilot_seat_management", RW),
    ("organization_copilot_agent_settings", RW),
    ("organization_announcement_banners", RW),
    ("organization_events", R),
    ("organization_hooks", RW),
    ("organization_personal_access_tokens", RW),
    ("organization_personal_access_token_requests", RW),
    ("organization_plan", R),
    ("organization_projects", RWA),
    ("organization_packages", RW),
    ("organization_secrets", RW),
    ("organization_self_hosted_runners", RW),
    ("organization_user_blocking", RW),
    ("email_addresses", RW),
    ("followers", RW),
    ("git_ssh_keys", RW),
    ("gpg_keys", RW),
    ("interaction_limits", RW),
    ("profile", W),
    ("starring", RW),
    ("enterprise_custom_properties_for_organizations", RWA),
];

/// The levels GitHub defines for `name`; `None` for a name it does not know.
pub(crate) fn levels(name: &str) -> Option<Levels> {
    PERMISSIONS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, levels)| *levels)
}

/// Parses a level as GitHub spells it.
pub(crate) fn parse_access(text: &str) -> Option<Access> {
    match text {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "admin" => Some(Access::Admin),
        _ => None,
    }
}

/// The policy's spelling of "the token's own repository".
pub(crate) const OWN_REPOSITORY: &str = "$repository";

/// Longest owner (user or organisation) name GitHub allows.
const MAX_OWNER_CHARS: usize = 39;
/// Longest repository name GitHub allows.
const MAX_REPOSITORY_CHARS: usize = 100;

/// One entry of a role's `repositories`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RepositoryEntry {
    /// `$repository`: the repository of the token being judged.
    Own,
    /// `owner/name`, which must belong to the token's own owner.
    Named {
        /// Owner as written (compared ASCII case-insensitively).
        owner: String,
        /// Repository name as written.
        name: String,
    },
}

impl RepositoryEntry {
    /// Parses an entry; the error says why it is not one.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == OWN_REPOSITORY {
            return Ok(Self::Own);
        }
        let Some((owner, name)) = text.split_once('/') else {
            return Err(format!(
                "must be `{OWN_REPOSITORY}` or `owner/name`, got {text:?}"
            ));
        };
        let owner_ok = (1..=MAX_OWNER_CHARS).contains(&owner.len())
            && owner
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        let name_ok = (1..=MAX_REPOSITORY_CHARS).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
        if !owner_ok || !name_ok {
            return Err(format!(
                "{text:?} is not a GitHub repository: `owner/name` with an owner of 1 to \
                 {MAX_OWNER_CHARS} letters, digits and `-` and a name of 1 to \
                 {MAX_REPOSITORY_CHARS} letters, digits and `._-` (no wildcards)"
            ));
        }
        Ok(Self::Named {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for RepositoryEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Own => f.write_str(OWN_REPOSITORY),
            Self::Named { owner, name } => write!(f, "{owner}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table above is GitHub's schema: same names, same levels.
    #[test]
    fn the_permission_table_is_githubs_schema() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github-api/api.github.com.excerpt.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schema = &document["paths"]["/app/installations/{installation_id}/access_tokens"]["post"]
            ["requestBody"]["content"]["application/json"]["schema"]["properties"]["permissions"];
        assert_eq!(schema["title"], "App Permissions", "{schema}");
        let properties = schema["properties"].as_object().unwrap();
        let from_schema: Vec<(String, Vec<String>)> = properties
            .iter()
            .map(|(name, property)| {
                assert_eq!(property["type"], "string", "{name}");
                let levels = property["enum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|level| level.as_str().unwrap().to_owned())
                    .collect();
                (name.clone(), levels)
            })
            .collect();
        let from_table: Vec<(String, Vec<String>)> = PERMISSIONS
            .iter()
            .map(|(name, levels)| {
                (
                    (*name).to_owned(),
                    levels
                        .iter()
                        .map(|level| level.as_str().to_owned())
                        .collect(),
                )
            })
            .collect();
        let mut sorted_schema = from_schema.clone();
        sorted_schema.sort();
        let mut sorted_table = from_table.clone();
        sorted_table.sort();
        assert_eq!(sorted_table, sorted_schema);
        assert!(PERMISSIONS.len() > 50, "{}", PERMISSIONS.len());
    }

    #[test]
    fn levels_and_entries() {
        assert_eq!(levels("contents"), Some(RW));
        assert_eq!(levels("workflows"), Some(W));
        assert_eq!(levels("organization_projects"), Some(RWA));
        assert_eq!(levels("content"), None);
        assert_eq!(parse_access("write"), Some(Access::Write));
        assert_eq!(parse_access("Write"), None);
        assert_eq!(
            RepositoryEntry::parse("$repository"),
            Ok(RepositoryEntry::Own)
        );
        assert_eq!(
            RepositoryEntry::parse("OurOrg/api.v2"),
            Ok(RepositoryEntry::Named {
                owner: "OurOrg".into(),
                name: "api.v2".into()
            })
        );
        for bad in [
            "api",
            "ourorg/*",
            "a/b/c",
            "/api",
            "ourorg/",
            "our_org/api",
            "$repo",
        ] {
            assert!(RepositoryEntry::parse(bad).is_err(), "{bad}");
        }
    }
}
