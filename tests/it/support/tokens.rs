//! GitHub-shaped ID tokens signed with the checked-in, test-only RSA keys,
//! plus raw constructions for attacks on the verifier.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};

/// The audience every test broker accepts by default.
pub const AUDIENCE: &str = "https://github.com/ourorg";

/// Default claim values (copied in shape from real GitHub tokens).
pub const REPOSITORY: &str = "ourorg/widget-service";
pub const REPOSITORY_ID: &str = "811223344";
pub const REPOSITORY_OWNER: &str = "ourorg";
pub const REPOSITORY_OWNER_ID: &str = "1234567";
pub const SHA: &str = "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d";
pub const REF: &str = "refs/heads/main";
pub const RUN_ID: &str = "24766983965";
pub const RUN_ATTEMPT: &str = "2";
pub const CHECK_RUN_ID: &str = "72463523102";
pub const ACTOR: &str = "octocat-deployer";
pub const ACTOR_ID: &str = "5833001";
pub const JOB_WORKFLOW_REF: &str =
    "ourorg/widget-service/.github/workflows/deploy.yml@refs/heads/main";

/// A checked-in, test-only RSA key pair.
pub struct TestKey {
    /// The `kid` this key is published under by default.
    pub kid: &'static str,
    /// PKCS#1 PEM private key.
    pub private_pem: &'static str,
    /// SPKI PEM public key.
    pub public_pem: &'static str,
    jwk_json: &'static str,
}

/// Test key A: the issuer's usual signing key.
pub static KEY_A: TestKey = TestKey {
    kid: "test-key-a-0f3c9e",
    private_pem: include_str!("../../fixtures/test_key_a.pem"),
    public_pem: include_str!("../../fixtures/test_key_a.pub.pem"),
    jwk_json: include_str!("../../fixtures/test_key_a.jwk.json"),
};

/// Test key B: a second key (rotation, or an attacker's key).
pub static KEY_B: TestKey = TestKey {
    kid: "test-key-b-7d21a4",
    private_pem: include_str!("../../fixtures/test_key_b.pem"),
    public_pem: include_str!("../../fixtures/test_key_b.pub.pem"),
    jwk_json: include_str!("../../fixtures/test_key_b.jwk.json"),
};

impl TestKey {
    /// The public JWK under this key's own kid.
    pub fn jwk(&self) -> Value {
        self.jwk_with_kid(self.kid)
    }

    /// The public JWK published under `kid`.
    pub fn jwk_with_kid(&self, kid: &str) -> Value {
        let parts: Value = serde_json::from_str(self.jwk_json).unwrap();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": parts["n"],
            "e": parts["e"],
        })
    }

    fn encoding_key(&self) -> EncodingKey {
        // jsonwebtoken is built without `use_pem`: unwrap the PKCS#1 PEM by hand.
        let body: String = self
            .private_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        EncodingKey::from_rsa_der(&der)
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A random RFC 4122-looking id, like GitHub's `jti`.
pub fn random_uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Builds one token: a header, a claim set and the key that signs it.
#[derive(Clone)]
pub struct TokenBuilder {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    key: &'static TestKey,
}

impl TokenBuilder {
    /// A token from `issuer` with GitHub's claim set for a push to main,
    /// signed by [`KEY_A`] under its kid, valid from now for 300 s.
    pub fn new(issuer: &str) -> Self {
        let iat = now();
        let claims = json!({
            "jti": random_uuid(),
            "sub": format!("repo:{REPOSITORY}:ref:{REF}"),
            "aud": AUDIENCE,
            "ref": REF,
            "sha": SHA,
            "repository": REPOSITORY,
            "repository_owner": REPOSITORY_OWNER,
            "repository_owner_id": REPOSITORY_OWNER_ID,
            "run_id": RUN_ID,
            "run_number": "42",
            "run_attempt": RUN_ATTEMPT,
            "repository_visibility": "private",
            "repository_id": REPOSITORY_ID,
            "actor_id": ACTOR_ID,
            "actor": ACTOR,
            "workflow": "Deploy widget",
            "head_ref": "",
            "base_ref": "",
            "event_name": "push",
            "ref_protected": "true",
            "ref_type": "branch",
            "workflow_ref": JOB_WORKFLOW_REF,
            "workflow_sha": SHA,
            "job_workflow_ref": JOB_WORKFLOW_REF,
            "job_workflow_sha": SHA,
            "runner_environment": "github-hosted",
            "check_run_id": CHECK_RUN_ID,
            "iss": issuer,
            "nbf": iat - 300,
            "exp": iat + 300,
            "iat": iat,
        });
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let Value::Object(header) = json!({"alg": "RS256", "kid": KEY_A.kid, "typ": "JWT"}) else {
            unreachable!()
        };
        Self {
            header,
            claims,
            key: &KEY_A,
        }
    }

    /// Sets (or adds) a claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
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
    pub fn signed_by(mut self, key: &'static TestKey) -> Self {
        self.key = key;
        self
    }

    /// Sets `iat`, `nbf` (= iat - 300) and `exp` (= iat + 300) around `iat`.
    pub fn issued_at(self, iat: i64) -> Self {
        self.claim("iat", iat)
            .claim("nbf", iat - 300)
            .claim("exp", iat + 300)
    }

    /// A claim's value as a string.
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

    fn signing_input(&self) -> String {
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.header).unwrap());
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.claims).unwrap());
        format!("{header}.{claims}")
    }

    /// The compact JWS, RS256-signed by the builder's key (the header's `alg`
    /// is written as set, so a test can lie about it).
    pub fn build(&self) -> String {
        let input = self.signing_input();
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &self.key.encoding_key(),
            Algorithm::RS256,
        )
        .unwrap();
        format!("{input}.{signature}")
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
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{signature}")
    }
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
