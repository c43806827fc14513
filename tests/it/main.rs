//! Black-box integration tests: the real `attestation-broker` binary against a
//! loopback OIDC issuer and a loopback STS (see `support/`).

mod support;

mod admin;
mod binding;
mod bodies;
mod cli;
mod issuance;
mod jwks_failures;
mod logs;
mod policy;
mod real_tokens;
mod rejections;
mod replay;
mod sts_failures;
