//! Values that are checked as they are read: a bad one is a type error of its
//! key (`FILE: key KEY: REASON`, collected with every other), and the value
//! the rest of the crate receives already carries the guarantee.

use serde::de::{Deserialize, Deserializer, Error as _};
use url::Url;

/// Parses an algorithm name from the allow-list; `none` and HMAC are never accepted.
pub fn parse_algorithm(name: &str) -> Result<jsonwebtoken::Algorithm, String> {
    use jsonwebtoken::Algorithm as A;
    match name {
        "RS256" => Ok(A::RS256),
        "RS384" => Ok(A::RS384),
        "RS512" => Ok(A::RS512),
        "PS256" => Ok(A::PS256),
        "PS384" => Ok(A::PS384),
        "PS512" => Ok(A::PS512),
        "ES256" => Ok(A::ES256),
        "ES384" => Ok(A::ES384),
        _ if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") => {
            Err(format!(
                "`{name}` is never accepted: unsigned and shared-secret tokens cannot prove who minted them"
            ))
        }
        _ => Err(format!(
            "unknown algorithm `{name}` (use RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384)"
        )),
    }
}

/// One `verify.algorithms` entry, read through [`parse_algorithm`].
struct AllowedAlgorithm(jsonwebtoken::Algorithm);

impl<'de> Deserialize<'de> for AllowedAlgorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        parse_algorithm(&name).map(Self).map_err(D::Error::custom)
    }
}

/// `verify.algorithms`: each entry from the allow-list, or a type error at its
/// index (`verify.algorithms[1]`).
pub(super) fn algorithms<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<jsonwebtoken::Algorithm>, D::Error> {
    let names = Vec::<AllowedAlgorithm>::deserialize(deserializer)?;
    Ok(names.into_iter().map(|AllowedAlgorithm(alg)| alg).collect())
}

/// `https://` anywhere; `http://` only for loopback hosts (local tests and emulators).
pub fn check_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(url) => Ok(()),
        "http" => Err("http:// is accepted only for loopback hosts; use https://".into()),
        other => Err(format!("scheme `{other}` is not supported; use https://")),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An optional URL that passes [`check_scheme`].
pub(super) fn web_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Url>, D::Error> {
    let url = Option::<Url>::deserialize(deserializer)?;
    if let Some(url) = &url {
        check_scheme(url).map_err(D::Error::custom)?;
    }
    Ok(url)
}

/// `replay.redis_url`: a `redis://` or `rediss://` URL with certificate
/// verification on, checked by the redis crate itself when read, so that
/// `check-config` refuses exactly what `serve` could not connect with.
///
/// The URL may carry a password: `Debug` shows the address only, and the
/// redis crate's messages are fixed texts that never echo the URL.
#[derive(Clone)]
pub struct RedisUrl(redis::ConnectionInfo);

impl RedisUrl {
    /// Reads and checks `url`; the error is the reason, for `replay.redis_url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = Url::parse(url).map_err(|err| format!("not a URL: {err}"))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err("scheme must be redis:// or rediss://".into());
        }
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|err| format!("not a usable Redis URL: {err}"))?;
        match info.addr() {
            redis::ConnectionAddr::TcpTls { insecure: true, .. } => Err(
                "`#insecure` would turn off certificate verification and is not supported".into(),
            ),
            redis::ConnectionAddr::TcpTls { .. } | redis::ConnectionAddr::Tcp(..) => Ok(Self(info)),
            _ => Err("scheme must be redis:// or rediss://".into()),
        }
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        matches!(self.0.addr(), redis::ConnectionAddr::TcpTls { .. })
    }

    /// What the redis crate connects with.
    pub fn connection_info(&self) -> &redis::ConnectionInfo {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisUrl").field(self.0.addr()).finish()
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        Self::parse(&url).map_err(D::Error::custom)
    }
}

/// A number in `MIN..=MAX`, or a type error naming the range.
pub(super) fn within<'de, D, T, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + TryInto<u64>,
{
    let value = T::deserialize(deserializer)?;
    match value.try_into() {
        Ok(number) if (MIN..=MAX).contains(&number) => Ok(value),
        _ if MIN == 0 => Err(D::Error::custom(format!("must be at most {MAX}"))),
        _ => Err(D::Error::custom(format!("must be between {MIN} and {MAX}"))),
    }
}

/// A number of at least `MIN`, or a type error saying so.
pub(super) fn at_least<'de, D, T, const MIN: u64>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + TryInto<u64>,
{
    let value = T::deserialize(deserializer)?;
    match value.try_into() {
        Ok(number) if number >= MIN => Ok(value),
        _ => Err(D::Error::custom(format!("must be at least {MIN}"))),
    }
}
