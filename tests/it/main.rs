//! Black-box integration tests: the real `attestation-broker` binary, or its
//! router served in this process where the binary adds nothing, against a
//! loopback OIDC issuer and a loopback STS (see `support/`).
//!
//! Every module is `#[cfg(test)]` (always true in this binary) so that
//! clippy's `allow-unwrap-in-tests` and friends also cover the helpers.
//!
//! `unreachable_pub` guards the library's surface; this crate has none, and
//! `pub` in `support/` only means "shared between the test files".

#![expect(
    unreachable_pub,
    reason = "`pub` in support/ only shares helpers between the test files"
)]

#[cfg(test)]
mod support;

#[cfg(test)]
mod admin;
#[cfg(test)]
mod binding;
#[cfg(test)]
mod bodies;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod cli_output;
#[cfg(test)]
mod cli_pipe;
#[cfg(test)]
mod fetch;
#[cfg(test)]
mod github_issue;
#[cfg(test)]
mod issuance;
#[cfg(test)]
mod issuers;
#[cfg(test)]
mod jwks_failures;
#[cfg(test)]
mod limits;
#[cfg(test)]
mod logs;
#[cfg(test)]
mod metric_assert;
#[cfg(test)]
mod policy;
#[cfg(test)]
mod policy_cli;
#[cfg(test)]
mod real_tokens;

#[cfg(test)]
mod python_peers;
#[cfg(test)]
mod rego_reload;
#[cfg(test)]
mod rejections;
#[cfg(test)]
mod replay;
#[cfg(test)]
mod replay_redis;
#[cfg(test)]
mod replay_redis_tls;
#[cfg(test)]
mod shutdown;
#[cfg(test)]
mod sts_failures;
#[cfg(test)]
mod tls;
#[cfg(test)]
mod token_inspect;
#[cfg(test)]
mod wire;
