//! Unit tests of the metrics registry.

use super::*;
use crate::sts::StsError;
use crate::verify::VerifyError;

#[test]
fn issued_credentials_move_from_active_to_expired() {
    let metrics = Metrics::new().unwrap();
    let now = SystemTime::now();
    metrics.credential_issued("deploy", now + Duration::from_secs(900));
    metrics.credential_issued("deploy", now + Duration::from_secs(1800));
    metrics.expire_credentials(now + Duration::from_secs(1000));
    let text = metrics.render();
    for sample in [
        "ci_creds_issued_total{role=\"deploy\"} 2",
        "ci_creds_expired_total{role=\"deploy\"} 1",
        "ci_creds_active{role=\"deploy\"} 1",
    ] {
        assert!(text.contains(sample), "{sample}:\n{text}");
    }
}

#[test]
fn two_instances_do_not_collide() {
    assert!(Metrics::new().is_ok());
    assert!(Metrics::new().is_ok());
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn closed_label_values_are_exported_at_zero_from_the_start() {
    let text = Metrics::new().unwrap().render();
    let families: [(&str, &str, &[&str]); 7] = [
        (
            "ci_token_rejections_total",
            "reason",
            TOKEN_REJECTION_REASONS,
        ),
        ("ci_sts_errors_total", "kind", STS_ERROR_KINDS),
        ("ci_binding_mismatches_total", "field", BINDING_FIELDS),
        ("ci_jwks_refresh_total", "result", JWKS_REFRESH_RESULTS),
        ("ci_policy_reloads_total", "result", RELOAD_RESULTS),
        ("ci_tls_reloads_total", "result", RELOAD_RESULTS),
        ("ci_rate_limited_total", "scope", RATE_LIMIT_SCOPES),
    ];
    for (name, label, values) in families {
        for value in values {
            let series = format!("{name}{{{label}=\"{value}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
    }
    for status in ISSUE_STATUSES {
        let series = format!("ci_http_requests_total{{route=\"/issue\",status=\"{status}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
    }
    assert_eq!(
        sample(&text, "ci_opa_policy_denials_total{role=\"none\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ci_ready"), Some(0.0), "{text}");
}

#[test]
fn every_role_of_a_policy_is_exported_at_zero() {
    let metrics = Metrics::new().unwrap();
    metrics.register_roles(["deploy", "release"]);
    let text = metrics.render();
    for role in ["deploy", "release"] {
        for name in [
            "ci_creds_issued_total",
            "ci_creds_expired_total",
            "ci_creds_active",
            "ci_opa_policy_denials_total",
        ] {
            let series = format!("{name}{{role=\"{role}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
    }
}

#[test]
fn every_token_rejection_reason_is_listed() {
    let all = VerifyError::ALL;
    for err in &all {
        // No `_` arm: a new variant does not compile until it is added above.
        match err {
            VerifyError::Malformed(_)
            | VerifyError::AlgorithmNotAccepted
            | VerifyError::MissingKeyId
            | VerifyError::UntrustedIssuer
            | VerifyError::UnknownKeyId
            | VerifyError::InvalidSignature
            | VerifyError::AudienceMismatch
            | VerifyError::Expired
            | VerifyError::NotYetValid
            | VerifyError::IssuedInFuture
            | VerifyError::MissingClaim(_)
            | VerifyError::LifetimeTooLong
            | VerifyError::KeysUnavailable => {}
        }
        assert!(
            TOKEN_REJECTION_REASONS.contains(&err.reason_code()),
            "{}",
            err.reason_code()
        );
    }
    assert_eq!(all.len(), TOKEN_REJECTION_REASONS.len());
}

#[test]
fn every_sts_error_kind_is_listed() {
    let all = [
        StsError::Throttled,
        StsError::Timeout,
        StsError::AccessDenied(String::new()),
        StsError::Other(String::new()),
    ];
    for err in &all {
        // No `_` arm: a new variant does not compile until it is added above.
        match err {
            StsError::Throttled
            | StsError::Timeout
            | StsError::AccessDenied(_)
            | StsError::Other(_) => {}
        }
        assert!(STS_ERROR_KINDS.contains(&err.kind()), "{}", err.kind());
    }
    assert_eq!(all.len(), STS_ERROR_KINDS.len());
}

#[test]
fn jwks_age_is_absent_and_timestamp_zero_before_the_first_success() {
    let metrics = Metrics::new().unwrap();
    metrics.set_jwks_age(0, None);
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "ci_jwks_last_success_timestamp_seconds{issuer_index=\"0\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        !text.contains("ci_jwks_last_success_age_seconds{"),
        "{text}"
    );

    let before = unix_seconds(SystemTime::now());
    metrics.set_jwks_age(0, Some(30));
    let text = metrics.render();
    let at = sample(
        &text,
        "ci_jwks_last_success_timestamp_seconds{issuer_index=\"0\"}",
    )
    .unwrap();
    // Rendered as a float: whole seconds, 30 s before "now".
    assert!(
        at >= (before - 30) as f64 && at <= (before + 1) as f64,
        "{at} vs {before}"
    );
    assert_eq!(
        sample(
            &text,
            "ci_jwks_last_success_age_seconds{issuer_index=\"0\"}"
        ),
        Some(30.0),
        "{text}"
    );
}

#[test]
fn readiness_is_a_gauge() {
    let metrics = Metrics::new().unwrap();
    metrics.set_ready(true);
    assert_eq!(sample(&metrics.render(), "ci_ready"), Some(1.0));
    metrics.set_ready(false);
    assert_eq!(sample(&metrics.render(), "ci_ready"), Some(0.0));
}

#[test]
fn build_info_names_the_version_and_a_revision() {
    let text = Metrics::new().unwrap().render();
    let line = text
        .lines()
        .find(|line| line.starts_with("ci_build_info{"))
        .unwrap_or_else(|| panic!("no ci_build_info:\n{text}"));
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains("revision=\""), "{line}");
    assert!(!line.contains("revision=\"\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
}

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_are_exported() {
    let text = Metrics::new().unwrap().render();
    for name in [
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("\n{name} ")), "{name}:\n{text}");
    }
}
