//! The claim set of a token, as the policy engine sees it.
//!
//! Every scalar claim is kept as its string form (`true`, `42`, `refs/heads/main`),
//! because GitHub's claims are strings and the policy language compares strings
//! (`ref_protected = true` matches `"true"`). Arrays and objects are not kept as
//! claims: no policy key can name them, so they can never match by accident.
//! This module trusts nothing: a `ClaimSet` is only data, and nothing that
//! decides or issues takes one. Where claims came from is carried by the type
//! that wraps them: `verify::VerifiedClaims` (a token whose signature checked
//! out; only `verify` builds it) is what the request path decides on, and
//! [`UnverifiedClaims`] (a file, a hand-typed claim, a witness the policy
//! tools made up) is what offline tools evaluate. No function turns the second
//! into the first, so claims from a file can be explained but never reach STS.

use std::collections::BTreeMap;

/// Scalar claims by name, as strings. Built only by this crate (from a
/// verified token's payload, or inside [`UnverifiedClaims`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(Default))]
pub struct ClaimSet {
    values: BTreeMap<String, String>,
}

impl ClaimSet {
    /// Builds a claim set from a JSON object: strings as they are, booleans and
    /// numbers in their JSON text form; null, arrays and objects are dropped.
    pub(crate) fn from_json_object(object: &serde_json::Map<String, serde_json::Value>) -> Self {
        let values = object
            .iter()
            .filter_map(|(name, value)| scalar_string(value).map(|text| (name.clone(), text)))
            .collect();
        Self { values }
    }

    /// [`ClaimSet::from_json_object`], taking the object: its strings move
    /// into the set instead of being copied.
    pub(crate) fn from_json_map(object: serde_json::Map<String, serde_json::Value>) -> Self {
        let values = object
            .into_iter()
            .filter_map(|(name, value)| into_scalar_string(value).map(|text| (name, text)))
            .collect();
        Self { values }
    }

    /// The claim's string value, or `None` when the token does not carry it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Sets one claim (unit tests build claim sets by hand).
    #[cfg(test)]
    pub(crate) fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// All claims in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Claims nobody verified: read from a file, typed on a command line, or made
/// up by the policy tools as a witness. `policy explain`, `policy check` and
/// `policy diff` evaluate them with `Policy::evaluate_unverified`; nothing
/// converts them into `verify::VerifiedClaims`, so they can never lead to a
/// credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedClaims {
    claims: ClaimSet,
}

impl UnverifiedClaims {
    /// Builds claims from a JSON object, as a token's payload would be read:
    /// strings as they are, booleans and numbers in their JSON text form;
    /// null, arrays and objects are dropped.
    pub fn from_json_object(object: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            claims: ClaimSet::from_json_object(object),
        }
    }

    /// Sets one claim (`policy explain --claim`, witnesses, fuzzing).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.claims.values.insert(name.into(), value.into());
    }

    /// The claim's string value, or `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.claims.get(name)
    }

    /// All claims in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.claims.iter()
    }

    /// The claims as data, for read-only checks (binding, tracing).
    pub fn claim_set(&self) -> &ClaimSet {
        &self.claims
    }
}

impl Default for UnverifiedClaims {
    fn default() -> Self {
        Self {
            claims: ClaimSet {
                values: BTreeMap::new(),
            },
        }
    }
}

fn scalar_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Null | serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            None
        }
    }
}

fn into_scalar_string(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text),
        other => scalar_string(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_become_strings_and_structures_are_dropped() {
        let json = serde_json::json!({
            "repository": "octo/repo", "ref_protected": true, "run_attempt": 2,
            "aud": ["a", "b"], "nested": {"x": 1}, "nothing": null
        });
        let object = json.as_object().unwrap();
        let claims = ClaimSet::from_json_object(object);
        assert_eq!(ClaimSet::from_json_map(object.clone()), claims);
        assert_eq!(claims.get("repository"), Some("octo/repo"));
        assert_eq!(claims.get("ref_protected"), Some("true"));
        assert_eq!(claims.get("run_attempt"), Some("2"));
        assert_eq!(claims.get("aud"), None);
        assert_eq!(claims.get("nested"), None);
        assert_eq!(claims.get("nothing"), None);
    }
}
