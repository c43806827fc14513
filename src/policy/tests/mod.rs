//! Tests of the policy engine, table-driven where the cases are data.

mod context;
mod evaluate;
mod example;
mod github;
mod glob;
mod load;

use crate::claims::UnverifiedClaims;

use super::{LoadedPolicy, Policy, PolicyError};

/// Compiles a policy that must be valid.
fn compile_ok(text: &str) -> LoadedPolicy {
    match Policy::compile(text, "test.toml") {
        Ok(loaded) => loaded,
        Err(err) => panic!("policy should compile:\n{err}\n--- text ---\n{text}"),
    }
}

/// Compiles a policy that must be invalid; returns the error text.
fn load_error(text: &str) -> String {
    match Policy::compile(text, "test.toml") {
        Ok(_) => panic!("policy should not compile:\n{text}"),
        Err(
            err @ (PolicyError::Invalid { .. }
            | PolicyError::InvalidMany { .. }
            | PolicyError::Syntax { .. }),
        ) => err.to_string(),
        Err(err) => panic!("unexpected error kind: {err}"),
    }
}

/// A claim set from `(name, value)` pairs.
fn claims(pairs: &[(&str, &str)]) -> UnverifiedClaims {
    let mut set = UnverifiedClaims::default();
    for (name, value) in pairs {
        set.insert(*name, *value);
    }
    set
}
