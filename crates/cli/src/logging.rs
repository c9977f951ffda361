//! Logs on stderr, for a person or for a collector. `AVAIL_LOG` filters them
//! (`warn`, `debug`, `avail_server=debug`, …; the command picks the default);
//! `AVAIL_LOG_FORMAT` chooses their shape: `text` (the default) for a person, with
//! colours only when stderr is a terminal, or `json`, one JSON object per line,
//! for journald, Loki and the like.

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// The environment variable that filters logs.
const FILTER_VAR: &str = "AVAIL_LOG";
/// The environment variable that chooses the log format.
const FORMAT_VAR: &str = "AVAIL_LOG_FORMAT";

/// The shapes logs can take.
const FORMATS: [&str; 2] = ["text", "json"];

/// Install the global subscriber: `AVAIL_LOG`, or `default_level` when it is
/// unset or empty, in the format `AVAIL_LOG_FORMAT` names. A filter that does not
/// parse or an unknown format is a malformed command line: it is said on stderr,
/// and the exit code (2) is returned for the caller to exit with.
pub fn init(default_level: &str) -> Result<(), ExitCode> {
    let refuse = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let filter = match std::env::var(FILTER_VAR) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).map_err(|e| {
            refuse(format!(
                "{FILTER_VAR}={spec:?} is not a log filter ({e}); for example \
                 {FILTER_VAR}=debug or {FILTER_VAR}=warn,avail_server=debug"
            ))
        })?,
        _ => EnvFilter::new(default_level),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var(FORMAT_VAR).unwrap_or_default().as_str() {
        "" | "text" => logs.with_ansi(colours()).init(),
        "json" => logs.json().with_ansi(false).init(),
        other => {
            return Err(refuse(format!(
                "{FORMAT_VAR}={other:?} is not a log format; use one of: {}",
                FORMATS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether text logs get colours: only on a terminal, and never with `NO_COLOR`
/// set (<https://no-color.org>).
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
