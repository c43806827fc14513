//! GitHub-shaped ID tokens from the test kit's minter, signed with the
//! checked-in, test-only RSA keys, plus raw constructions for attacks on the
//! verifier.

use std::sync::OnceLock;

use attestation_broker::testkit::keys::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

pub use attestation_broker::testkit::token::defaults::*;
pub use attestation_broker::testkit::token::{TokenBuilder, now};

/// A checked-in, test-only RSA key pair.
pub struct TestKey {
    /// The `kid` this key is published under by default.
    pub kid: &'static str,
    /// PKCS#1 PEM private key.
    pub private_pem: &'static str,
    /// SPKI PEM public key.
    pub public_pem: &'static str,
    signing: OnceLock<SigningKey>,
}

/// Test key A: the issuer's usual signing key.
pub static KEY_A: TestKey = TestKey {
    kid: "test-key-a-0f3c9e",
    private_pem: include_str!("../../fixtures/test_key_a.pem"),
    public_pem: include_str!("../../fixtures/test_key_a.pub.pem"),
    signing: OnceLock::new(),
};

/// Test key B: a second key (rotation, or an attacker's key).
pub static KEY_B: TestKey = TestKey {
    kid: "test-key-b-7d21a4",
    private_pem: include_str!("../../fixtures/test_key_b.pem"),
    public_pem: include_str!("../../fixtures/test_key_b.pub.pem"),
    signing: OnceLock::new(),
};

impl TestKey {
    /// The kit's signing key for this PEM, under this key's kid.
    pub fn signing_key(&self) -> SigningKey {
        self.signing
            .get_or_init(|| SigningKey::from_pkcs1_pem(self.kid, self.private_pem).unwrap())
            .clone()
    }

    /// The public JWK under this key's own kid.
    pub fn jwk(&self) -> Value {
        self.signing_key().jwk()
    }

    /// The public JWK published under `kid`.
    pub fn jwk_with_kid(&self, kid: &str) -> Value {
        self.signing_key().jwk_with_kid(kid)
    }
}

impl From<&TestKey> for SigningKey {
    fn from(key: &TestKey) -> Self {
        key.signing_key()
    }
}

/// A token from `issuer` with the kit's GitHub claim set for a push to main,
/// signed by [`KEY_A`] under its kid, valid from now for 300 s.
pub fn token(issuer: &str) -> TokenBuilder {
    TokenBuilder::github(issuer, &KEY_A)
}

/// The three parts of a compact JWS.
pub fn split(token: &str) -> (String, String, String) {
    let mut parts = token.splitn(3, '.');
    let header = parts.next().unwrap_or_default().to_owned();
    let payload = parts.next().unwrap_or_default().to_owned();
    let signature = parts.next().unwrap_or_default().to_owned();
    (header, payload, signature)
}

/// The signature part of a token.
pub fn signature_of(token: &str) -> String {
    split(token).2
}

/// Replaces the payload with `edit(payload)`, keeping header and signature.
pub fn tamper_payload(token: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let (header, payload, signature) = split(token);
    let mut claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    edit(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{header}.{payload}.{signature}")
}

/// Flips bits in the middle of the signature (still valid base64url).
pub fn corrupt_signature(token: &str) -> String {
    let (header, payload, signature) = split(token);
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x5a;
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Base64url of arbitrary bytes, for hand-made segments.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of the token text, lowercase hex (the audit log's `token_sha256`).
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
