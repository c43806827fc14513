//! The App's private key and the RS256 JWTs it signs.
//!
//! The key is read from a PEM file, PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
//! GitHub hands out) or PKCS#8 (`BEGIN PRIVATE KEY`), and checked by
//! aws-lc-rs when read, so a bad key stops the start-up rather than the
//! first request. It is a secret: `Debug` shows nothing of it, and no error
//! message quotes the file's content.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), DER content bytes.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// Smallest accepted modulus: GitHub's App keys are 2048 bits.
const MIN_MODULUS_BYTES: usize = 256;
/// Largest PEM file read.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// The App's RSA private key.
#[derive(Clone)]
pub struct AppKey {
    key: EncodingKey,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

/// The claims of an App JWT.
#[derive(Debug, Serialize)]
struct AppClaims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

impl AppKey {
    /// Reads and checks the PEM file at `path`; the error is the reason,
    /// naming the file and never its content.
    pub fn load(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|err| format!("cannot read {shown}: {err}"))?
            .len();
        if size > MAX_PEM_BYTES {
            return Err(format!(
                "{shown} is larger than a private key ({size} bytes)"
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
        Self::from_pem(&text).map_err(|reason| format!("{shown}: {reason}"))
    }

    /// Reads a PKCS#1 or PKCS#8 RSA private key PEM.
    pub fn from_pem(text: &str) -> Result<Self, &'static str> {
        let (label, der) = pem_block(text)?;
        let pkcs1 = match label.as_str() {
            "RSA PRIVATE KEY" => der,
            "PRIVATE KEY" => pkcs8_rsa_key(&der)?,
            "ENCRYPTED PRIVATE KEY" => return Err("the key is encrypted; store it decrypted"),
            _ => {
                return Err(
                    "not an RSA private key PEM (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`)",
                );
            }
        };
        let pair = aws_lc_rs::rsa::KeyPair::from_der(&pkcs1)
            .map_err(|_| "not a usable RSA private key")?;
        if pair.public_modulus_len() < MIN_MODULUS_BYTES {
            return Err("the RSA key is shorter than 2048 bits");
        }
        Ok(Self {
            key: EncodingKey::from_rsa_der(&pkcs1),
        })
    }

    /// An App JWT: RS256, `iss` = `app_id`, `iat` = `now` − 60 s (GitHub's
    /// advice against clock drift), `exp` = `iat` + `lifetime_seconds`.
    pub fn sign_jwt(
        &self,
        app_id: &str,
        now: u64,
        lifetime_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.saturating_sub(60);
        let claims = AppClaims {
            iat,
            exp: iat + lifetime_seconds,
            iss: app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
    }
}

/// The label and DER bytes of the first PEM block.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), &'static str> {
    let mut label = None;
    let mut body = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            if label.is_some() {
                return Err("malformed PEM: a block starts inside another");
            }
            let name = rest.strip_suffix("-----").ok_or("malformed PEM header")?;
            label = Some(name.to_owned());
        } else if line.starts_with("-----END ") {
            if label.is_some() {
                break;
            }
            return Err("malformed PEM: an end line before any begin line");
        } else if label.is_some() {
            if line.contains(':') {
                return Err("the key is encrypted; store it decrypted");
            }
            body.push_str(line);
        }
    }
    let label = label.ok_or("no PEM block found")?;
    let der = STANDARD
        .decode(body)
        .map_err(|_| "the PEM body is not base64")?;
    Ok((label, der))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`:
/// `SEQUENCE { INTEGER version, SEQUENCE { OID rsaEncryption, … }, OCTET STRING key, … }`.
fn pkcs8_rsa_key(der: &[u8]) -> Result<Vec<u8>, &'static str> {
    const NOT_RSA: &str = "not a PKCS#8 RSA private key";
    let (0x30, info, _) = der_item(der).ok_or(NOT_RSA)? else {
        return Err(NOT_RSA);
    };
    let (0x02, _version, rest) = der_item(info).ok_or(NOT_RSA)? else {
        return Err(NOT_RSA);
    };
    let (0x30, algorithm, rest) = der_item(rest).ok_or(NOT_RSA)? else {
        return Err(NOT_RSA);
    };
    let (0x06, oid, _) = der_item(algorithm).ok_or(NOT_RSA)? else {
        return Err(NOT_RSA);
    };
    if oid != RSA_ENCRYPTION_OID {
        return Err("the PKCS#8 key is not an RSA key");
    }
    let (0x04, key, _) = der_item(rest).ok_or(NOT_RSA)? else {
        return Err(NOT_RSA);
    };
    Ok(key.to_vec())
}

/// One DER item: its tag, its content and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS1: &str = include_str!("../../tests/fixtures/test_key_a.pem");

    fn pkcs8_pem() -> String {
        use aws_lc_rs::encoding::AsDer as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = pair.as_der().unwrap();
        let body = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    #[test]
    fn pkcs1_and_pkcs8_keys_load_and_sign() {
        for pem in [PKCS1.to_owned(), pkcs8_pem()] {
            let key = AppKey::from_pem(&pem).unwrap();
            let jwt = key.sign_jwt("123", 1_000_000, 540).unwrap();
            assert_eq!(jwt.split('.').count(), 3);
        }
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let cases = [
            ("", "no PEM block"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not an RSA",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----\n",
                "base64",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "usable",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
                "PKCS#8",
            ),
        ];
        for (pem, expected) in cases {
            let err = AppKey::from_pem(pem).unwrap_err();
            assert!(err.contains(expected), "{pem}: {err}");
        }
    }

    #[test]
    fn debug_shows_nothing_of_the_key() {
        let key = AppKey::from_pem(PKCS1).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "AppKey(<redacted>)");
        let body_line = PKCS1.lines().nth(1).unwrap();
        assert!(!shown.contains(&body_line[..16]));
    }
}
