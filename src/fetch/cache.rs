//! The private credential cache of `fetch --credential-process`.
//!
//! AWS SDKs run a `credential_process` again whenever the credential they
//! hold is near its end, and botocore (so the AWS CLI and boto3) counts a
//! 15-minute credential as near its end from the start: without a cache,
//! every AWS call would cost an ID token, an issuance and an STS call. The
//! cache hands the same credential back while more than a margin of its life
//! remains.
//!
//! Invariants:
//! - One file per request: the name is the SHA-256 of the broker URL, role,
//!   audience, duration, repository, sha, job id and run, so two different
//!   requests never share a credential.
//! - The directory is created with mode 0700 and must be owned by this user
//!   with no group or other permissions, or it is not used at all (a usage
//!   error). A file in it is read only when it is a regular file owned by
//!   this user with mode 0600 or stricter; anything else is ignored and
//!   replaced.
//! - Files are written whole: a temporary file (mode 0600, created
//!   exclusively) is written, synced and renamed over the final name.
//! - Neither the file's contents nor its values are ever printed; messages
//!   name the path only.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::answer::{Credentials, parse_credentials};
use super::{FetchArgs, FetchError, RunnerEnv};

/// Default `--cache-margin-seconds`: a cached credential is handed out only
/// while more than this is left of its life. Longer than the refresh buffer
/// of the SDKs that reuse a credential until close to its end (Rust SDK:
/// 10 s at most; Go SDK v2: none by default), so an SDK asking again near
/// expiry gets a fresh credential, not the one it is replacing; short enough
/// that one issuance serves 14 of a 15-minute credential's minutes.
pub(super) const DEFAULT_MARGIN_SECONDS: u64 = 60;
/// Name of the cache directory under `RUNNER_TEMP`.
pub(super) const DIR_NAME: &str = "attestation-broker-cache";
/// Prefix of cache file names.
const FILE_PREFIX: &str = "credential-";
/// Prefix of temporary files.
const TEMP_PREFIX: &str = ".tmp-";
/// Largest cache file read (a credential is a few kilobytes).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Where the cache lives: `--cache-dir`, else `$RUNNER_TEMP/attestation-broker-cache`;
/// `None` when neither is set or `--no-cache` is given.
pub(super) fn cache_dir(args: &FetchArgs, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    // Ownership and permission checks need Unix; elsewhere, no cache.
    if args.no_cache || !cfg!(unix) {
        return None;
    }
    args.cache_dir.clone().or_else(|| {
        env.get("RUNNER_TEMP")
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(DIR_NAME))
    })
}

/// One request's cache file.
#[derive(Debug)]
pub(super) struct CredentialCache {
    file: PathBuf,
    margin: Duration,
}

impl CredentialCache {
    /// Opens (creating it if needed) the private directory `dir` and names
    /// this request's file in it. An unsafe directory is a usage error.
    pub(super) fn open(
        dir: &Path,
        args: &FetchArgs,
        env: &BTreeMap<String, String>,
        issue_url: &Url,
        runner: &RunnerEnv,
    ) -> Result<Self, FetchError> {
        ensure_private_dir(dir).map_err(|reason| {
            FetchError::Usage(format!(
                "credential cache {}: {reason}; pass --cache-dir with a private directory, or --no-cache",
                dir.display()
            ))
        })?;
        let key = json!([
            "v1",
            issue_url.as_str(),
            args.role.as_deref().unwrap_or_default(),
            args.audience.as_deref().unwrap_or_default(),
            args.duration_seconds,
            runner.repository,
            runner.sha,
            args.job_id.as_deref().unwrap_or_default(),
            env.get("GITHUB_RUN_ID")
                .map(String::as_str)
                .unwrap_or_default(),
            env.get("GITHUB_RUN_ATTEMPT")
                .map(String::as_str)
                .unwrap_or_default(),
            env.get("GITHUB_JOB")
                .map(String::as_str)
                .unwrap_or_default(),
        ]);
        let digest = hex::encode(Sha256::digest(key.to_string().as_bytes()));
        Ok(Self {
            file: dir.join(format!("{FILE_PREFIX}{digest}.json")),
            margin: Duration::from_secs(args.cache_margin_seconds),
        })
    }

    /// The cached credential, when the file is safe to read and the
    /// credential has more than the margin left. Anything else is `None`.
    pub(super) fn load(&self) -> Option<Credentials> {
        let bytes = read_private_file(&self.file)?;
        let credentials = parse_credentials(&bytes).ok()?;
        let rfc3339 = time::format_description::well_known::Rfc3339;
        let expiration = time::OffsetDateTime::parse(&credentials.expiration, &rfc3339).ok()?;
        let left = expiration - time::OffsetDateTime::now_utc();
        (left > self.margin).then_some(credentials)
    }

    /// Writes `credentials` atomically. Failure is reported to the caller,
    /// which carries on: the credential is delivered either way.
    pub(super) fn store(&self, credentials: &Credentials) -> Result<(), String> {
        let document = serde_json::to_vec(credentials).map_err(|err| err.to_string())?;
        write_atomically(&self.file, &document)
            .map_err(|err| format!("{}: {err}", self.file.display()))
    }

    /// The file's path (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.file
    }
}

/// Removes every cache and temporary file in `dir` and then `dir` itself
/// when it is empty; returns how many credentials were removed. A missing
/// directory is not an error; an unsafe one is left alone.
pub(super) fn clear(dir: &Path) -> Result<usize, String> {
    match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err.to_string()),
        Ok(_) => {}
    }
    check_private_dir(dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|err| err.to_string())? {
        let entry = entry.map_err(|err| err.to_string())?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.starts_with(FILE_PREFIX) || name.starts_with(TEMP_PREFIX);
        if !ours {
            continue;
        }
        std::fs::remove_file(entry.path()).map_err(|err| format!("{name}: {err}"))?;
        if name.starts_with(FILE_PREFIX) {
            removed += 1;
        }
    }
    // Only if empty: a --cache-dir may hold files of the user's own.
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

/// Creates `dir` (mode 0700) if it is missing, then checks it.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                builder.mode(0o700);
            }
            builder
                .create(dir)
                .map_err(|err| format!("cannot create it: {err}"))?;
        }
        Err(err) => return Err(err.to_string()),
    }
    check_private_dir(dir)
}

/// A directory (not a symbolic link), owned by this user, without group or
/// other permissions.
#[cfg(unix)]
fn check_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(dir).map_err(|err| err.to_string())?;
    if !meta.file_type().is_dir() {
        return Err("not a directory (symbolic links are not followed)".into());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not this user ({me})", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} gives group or other users access (0700 expected)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_dir(_dir: &Path) -> Result<(), String> {
    Err("file ownership cannot be checked on this platform".into())
}

/// Reads `path` only if it is a regular file of this user with mode 0600 or
/// stricter, and small.
#[cfg(unix)]
fn read_private_file(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt as _;
    if !std::fs::symlink_metadata(path).ok()?.file_type().is_file() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    // Checked on the open file, so a swap after the check above cannot slip
    // another file in.
    let meta = file.metadata().ok()?;
    let private = meta.file_type().is_file()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o077 == 0
        && meta.len() <= MAX_FILE_BYTES;
    if !private {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(not(unix))]
fn read_private_file(_path: &Path) -> Option<Vec<u8>> {
    None
}

/// Writes `bytes` to a fresh temporary file (mode 0600) next to `path`,
/// syncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let mut suffix = [0u8; 12];
    rand::fill(&mut suffix);
    let temp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}
