//! attestation-broker: turns a GitHub Actions OIDC token into short-lived AWS
//! credentials, under an explicit, deny-by-default policy.

pub mod claims;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod policy;
pub mod sts;
