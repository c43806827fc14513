//! Integration tests.

#[cfg(test)]
mod policy_cli;
