//! Tests of the language algebra (`lang.rs`, `space.rs`) and of `policy diff`.

mod context;
mod lang;
mod space;
mod table;

use crate::policy::Policy;

/// Compiles a policy that must be valid.
fn policy(text: &str) -> Policy {
    match Policy::compile(text, "test.toml") {
        Ok(loaded) => loaded.policy,
        Err(err) => panic!("policy should compile:\n{err}\n--- text ---\n{text}"),
    }
}
