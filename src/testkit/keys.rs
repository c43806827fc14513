//! RSA signing keys for test and demo tokens: generated at start, or read from a
//! checked-in PKCS#1 PEM (the integration tests' fixed keys).
//!
//! Signing goes through aws-lc-rs directly: aws-lc-rs exports a generated key
//! only as PKCS#8 and `jsonwebtoken`'s PEM import is off in this build, while an
//! RS256 JWS is just base64url parts and one PKCS#1 v1.5 SHA-256 signature.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::KitError;

/// An RSA private key and the `kid` it is published under. Cheap to clone.
#[derive(Clone)]
pub struct SigningKey(Arc<Inner>);

struct Inner {
    key: KeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.0.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh RSA 2048 key with kid `<prefix>-<first 8 bytes of SHA-256(n), hex>`.
    /// Generating takes a noticeable moment: call it off the reactor
    /// ([`SigningKey::generate_async`]) in async code.
    pub fn generate(kid_prefix: &str) -> Result<Self, KitError> {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KitError::Key)?;
        let digest = Sha256::digest(modulus(&key));
        let prefix = digest.first_chunk::<8>().copied().unwrap_or_default();
        let kid = format!("{kid_prefix}-{}", hex::encode(prefix));
        Ok(Self(Arc::new(Inner { key, kid })))
    }

    /// [`SigningKey::generate`] on a blocking thread.
    pub async fn generate_async(kid_prefix: &str) -> Result<Self, KitError> {
        let prefix = kid_prefix.to_owned();
        tokio::task::spawn_blocking(move || Self::generate(&prefix))
            .await
            .map_err(|_| KitError::Key)?
    }

    /// Reads a PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM, published under `kid`.
    pub fn from_pkcs1_pem(kid: &str, pem: &str) -> Result<Self, KitError> {
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).map_err(|_| KitError::Key)?;
        let key = KeyPair::from_der(&der).map_err(|_| KitError::Key)?;
        Ok(Self(Arc::new(Inner {
            key,
            kid: kid.to_owned(),
        })))
    }

    /// The key id the key is published under.
    pub fn kid(&self) -> &str {
        &self.0.kid
    }

    /// The public JWK under this key's own kid.
    pub fn jwk(&self) -> Value {
        self.jwk_with_kid(&self.0.kid)
    }

    /// The public JWK published under `kid`.
    pub fn jwk_with_kid(&self, kid: &str) -> Value {
        let public = self.0.key.public_key();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(modulus(&self.0.key)),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// The RS256 (PKCS#1 v1.5, SHA-256) signature of `message`.
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, KitError> {
        let mut signature = vec![0; self.0.key.public_modulus_len()];
        self.0
            .key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| KitError::Signing)?;
        Ok(signature)
    }
}

fn modulus(key: &KeyPair) -> Vec<u8> {
    key.public_key()
        .modulus()
        .big_endian_without_leading_zero()
        .to_vec()
}
