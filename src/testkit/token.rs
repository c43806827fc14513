//! The one token minter: a GitHub-shaped ID token built claim by claim and
//! signed RS256 by a [`SigningKey`], or deliberately left unsigned or signed
//! HS256 to attack a verifier.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::KitError;
use super::keys::SigningKey;

/// Claim values of [`TokenBuilder::github`] (shaped like a real GitHub
/// token for a push to `main`).
pub mod defaults {
    /// Audience.
    pub const AUDIENCE: &str = "https://github.com/ourorg";
    /// `repository`.
    pub const REPOSITORY: &str = "ourorg/widget-service";
    /// `repository_id`.
    pub const REPOSITORY_ID: &str = "811223344";
    /// `repository_owner`.
    pub const REPOSITORY_OWNER: &str = "ourorg";
    /// `repository_owner_id`.
    pub const REPOSITORY_OWNER_ID: &str = "1234567";
    /// `sha`, `workflow_sha`, `job_workflow_sha`.
    pub const SHA: &str = "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d";
    /// `ref`.
    pub const REF: &str = "refs/heads/main";
    /// `run_id`.
    pub const RUN_ID: &str = "24766983965";
    /// `run_attempt`.
    pub const RUN_ATTEMPT: &str = "2";
    /// `check_run_id`.
    pub const CHECK_RUN_ID: &str = "72463523102";
    /// `actor`.
    pub const ACTOR: &str = "octocat-deployer";
    /// `actor_id`.
    pub const ACTOR_ID: &str = "5833001";
    /// `workflow_ref` and `job_workflow_ref`.
    pub const JOB_WORKFLOW_REF: &str =
        "ourorg/widget-service/.github/workflows/deploy.yml@refs/heads/main";
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A random RFC 4122 version 4 id, like GitHub's `jti`.
pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Builds one token: a header, a claim set and the key that signs it.
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    key: SigningKey,
}

impl TokenBuilder {
    /// A token with no claims, header `{"alg":"RS256","kid":<key's kid>,"typ":"JWT"}`.
    pub fn new(key: impl Into<SigningKey>) -> Self {
        let key = key.into();
        let mut header = Map::new();
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(key.kid()));
        header.insert("typ".into(), json!("JWT"));
        Self {
            header,
            claims: Map::new(),
            key,
        }
    }

    /// A token from `issuer` with GitHub's claim set for a push to main (the
    /// values of [`defaults`]), a fresh `jti`, valid from 300 s ago
    /// (`nbf`) to 300 s from now, signed by `key` under its kid.
    pub fn github(issuer: &str, key: impl Into<SigningKey>) -> Self {
        use defaults::*;
        let iat = now();
        let claims = [
            ("jti", json!(random_uuid())),
            ("sub", json!(format!("repo:{REPOSITORY}:ref:{REF}"))),
            ("aud", json!(AUDIENCE)),
            ("ref", json!(REF)),
            ("sha", json!(SHA)),
            ("repository", json!(REPOSITORY)),
            ("repository_owner", json!(REPOSITORY_OWNER)),
            ("repository_owner_id", json!(REPOSITORY_OWNER_ID)),
            ("run_id", json!(RUN_ID)),
            ("run_number", json!("42")),
            ("run_attempt", json!(RUN_ATTEMPT)),
            ("repository_visibility", json!("private")),
            ("repository_id", json!(REPOSITORY_ID)),
            ("actor_id", json!(ACTOR_ID)),
            ("actor", json!(ACTOR)),
            ("workflow", json!("Deploy widget")),
            ("head_ref", json!("")),
            ("base_ref", json!("")),
            ("event_name", json!("push")),
            ("ref_protected", json!("true")),
            ("ref_type", json!("branch")),
            ("workflow_ref", json!(JOB_WORKFLOW_REF)),
            ("workflow_sha", json!(SHA)),
            ("job_workflow_ref", json!(JOB_WORKFLOW_REF)),
            ("job_workflow_sha", json!(SHA)),
            ("runner_environment", json!("github-hosted")),
            ("check_run_id", json!(CHECK_RUN_ID)),
            ("iss", json!(issuer)),
        ];
        claims
            .into_iter()
            .fold(Self::new(key), |builder, (name, value)| {
                builder.claim(name, value)
            })
            .issued_at(iat)
    }

    /// Sets (or adds) a claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Sets (or adds) every claim of `claims`.
    pub fn claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims.extend(claims);
        self
    }

    /// Removes a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets (or adds) a header field.
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a header field.
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// Signs with `key` (the header's kid is left as it is).
    pub fn signed_by(mut self, key: impl Into<SigningKey>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets `iat`, `nbf` (= iat - 300) and `exp` (= iat + 300) around `iat`.
    pub fn issued_at(self, iat: i64) -> Self {
        self.claim("iat", iat)
            .claim("nbf", iat.saturating_sub(300))
            .claim("exp", iat.saturating_add(300))
    }

    /// A claim's value as a string (JSON text for non-strings, empty when absent).
    pub fn get(&self, name: &str) -> String {
        match self.claims.get(name) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }

    /// The token's `jti`.
    pub fn jti(&self) -> String {
        self.get("jti")
    }

    /// The claim set as it stands.
    pub fn claim_set(&self) -> &Map<String, Value> {
        &self.claims
    }

    fn signing_input(&self) -> String {
        let header = URL_SAFE_NO_PAD.encode(Value::Object(self.header.clone()).to_string());
        let claims = URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string());
        format!("{header}.{claims}")
    }

    /// The compact JWS, RS256-signed by the builder's key (the header's `alg`
    /// is written as set, so a test can lie about it).
    pub fn try_build(&self) -> Result<String, KitError> {
        let input = self.signing_input();
        let signature = self.key.sign_rs256(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// [`TokenBuilder::try_build`] for tests and tools.
    ///
    /// # Panics
    /// When aws-lc-rs cannot sign with a key it already accepted (it does not
    /// happen; a test should fail loudly if it ever did).
    #[expect(
        clippy::expect_used,
        reason = "test kit: signing with an accepted RSA key does not fail, and a test must stop if it did"
    )]
    pub fn build(&self) -> String {
        self.try_build().expect("sign a test token")
    }

    /// An unsigned token: header `alg` = `alg` (e.g. `none`, `nOnE`) and an
    /// empty signature part.
    pub fn build_unsigned(&self, alg: &str) -> String {
        let input = self.clone().header("alg", alg).signing_input();
        format!("{input}.")
    }

    /// The key-confusion attack: `alg` HS256 with the HMAC secret = `secret`
    /// (e.g. the RSA public key's PEM bytes).
    pub fn build_hs256(&self, secret: &[u8]) -> String {
        let input = self.clone().header("alg", "HS256").signing_input();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    #[test]
    fn a_github_token_verifies_with_the_published_key() {
        let key = SigningKey::generate("unit").unwrap();
        let token = TokenBuilder::github("https://issuer.example", key.clone())
            .claim("ref", "refs/heads/x")
            .build();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[defaults::AUDIENCE]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(data.claims["ref"], "refs/heads/x");
        assert_eq!(data.claims["iss"], "https://issuer.example");

        let unsigned = TokenBuilder::github("x", key).build_unsigned("none");
        assert!(unsigned.ends_with('.'), "{unsigned}");
        let header = jsonwebtoken::decode_header(&unsigned);
        assert!(header.is_err(), "alg none must not parse as a JWS header");
    }
}
