//! Log output: JSON lines on stdout in the cluster, readable lines locally.
//!
//! Fields are flattened into the top level of each JSON line, so the audit
//! event's fields are queryable as they are. Nothing here decides what is
//! logged; callers never pass tokens or secrets (see `audit.rs`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{FmtSpan, Writer};

use crate::config::LogFormat;

/// Installs the global subscriber; `level` is a tracing filter such as `info`.
pub(crate) fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_span_events(FmtSpan::NONE);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .fmt_fields(UnprintedSpanFields)
            .try_init(),
        LogFormat::Pretty => builder.with_target(true).try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))
}

/// Span fields in JSON mode: a JSON line carries neither the current span
/// nor the span list, so span fields are never printed, and formatting them
/// when each span opens (the request span, the AWS SDK's spans) would be
/// work thrown away. Event fields are written by the JSON formatter itself.
struct UnprintedSpanFields;

impl<'writer> FormatFields<'writer> for UnprintedSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> std::fmt::Result {
        Ok(())
    }
}
