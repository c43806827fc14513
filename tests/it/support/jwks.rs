//! The loopback OIDC issuer is the test kit's: discovery document and JWKS,
//! switchable at run time (keys, issuer, document, failure modes).

pub use attestation_broker::testkit::issuer::{
    DISCOVERY_PATH, Issuer as JwksServer, JWKS_PATH, Mode, REDIRECTED_DISCOVERY_PATH,
    REDIRECTED_JWKS_PATH,
};
