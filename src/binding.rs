//! Binding: the request's own account of the job (`repo`, `sha`, `job_id`)
//! must agree with the verified token.
//!
//! The fields are optional, and a token is never refused for lacking them in
//! the request; but a field that is sent and contradicts the token refuses the
//! request, so a caller that mixed up two jobs' tokens learns it at once
//! instead of receiving credentials for the other job.
//!
//! Trust: the claims are expected to come from a verified token (the handler
//! binds only after verification); the request fields are attacker-shaped and
//! only compared, never interpreted.

use crate::claims::ClaimSet;

/// What the request says about its job; each field is optional.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestBinding<'a> {
    /// `repo`: `owner/name`, compared ASCII case-insensitively (GitHub names are).
    pub repo: Option<&'a str>,
    /// `sha`: compared exactly.
    pub sha: Option<&'a str>,
    /// `job_id`: compared with `check_run_id`; an empty one is not a claim.
    pub job_id: Option<&'a str>,
}

/// The request field that contradicts the token (`repo`, `sha` or `job_id`),
/// if any; checked in that order.
pub(crate) fn mismatch(request: &RequestBinding<'_>, claims: &ClaimSet) -> Option<&'static str> {
    if let Some(repo) = request.repo {
        // GitHub names are ASCII case-insensitive.
        if !claims
            .get("repository")
            .is_some_and(|claim| claim.eq_ignore_ascii_case(repo))
        {
            return Some("repo");
        }
    }
    if let Some(sha) = request.sha
        && claims.get("sha") != Some(sha)
    {
        return Some("sha");
    }
    if let Some(job_id) = request.job_id {
        // GitHub signs no job_id: the per-job identity is check_run_id.
        if !job_id.is_empty() && claims.get("check_run_id") != Some(job_id) {
            return Some("job_id");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> ClaimSet {
        let mut claims = ClaimSet::default();
        claims.insert("repository", "OurOrg/App");
        claims.insert("sha", "abc");
        claims.insert("check_run_id", "42");
        claims
    }

    fn repo(repo: &str) -> RequestBinding<'_> {
        RequestBinding {
            repo: Some(repo),
            ..RequestBinding::default()
        }
    }

    fn sha(sha: &str) -> RequestBinding<'_> {
        RequestBinding {
            sha: Some(sha),
            ..RequestBinding::default()
        }
    }

    fn job(job_id: &str) -> RequestBinding<'_> {
        RequestBinding {
            job_id: Some(job_id),
            ..RequestBinding::default()
        }
    }

    #[test]
    fn binding_rules() {
        let c = claims();
        assert_eq!(mismatch(&repo("ourorg/app"), &c), None);
        assert_eq!(mismatch(&repo("ourorg/app2"), &c), Some("repo"));
        assert_eq!(mismatch(&sha("ABC"), &c), Some("sha"));
        assert_eq!(mismatch(&job("42"), &c), None);
        assert_eq!(mismatch(&job(""), &c), None);
        assert_eq!(mismatch(&job("43"), &c), Some("job_id"));
        assert_eq!(mismatch(&RequestBinding::default(), &c), None);
        let mut no_check_run = ClaimSet::default();
        no_check_run.insert("repository", "o/r");
        assert_eq!(mismatch(&job("1"), &no_check_run), Some("job_id"));
    }

    #[test]
    fn the_first_contradiction_in_field_order_is_named() {
        let both = RequestBinding {
            repo: Some("other/repo"),
            sha: Some("def"),
            job_id: Some("43"),
        };
        assert_eq!(mismatch(&both, &claims()), Some("repo"));
        let later = RequestBinding {
            repo: Some("ourorg/app"),
            sha: Some("def"),
            job_id: Some("43"),
        };
        assert_eq!(mismatch(&later, &claims()), Some("sha"));
    }
}
