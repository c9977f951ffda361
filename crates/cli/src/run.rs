//! `avail run APP [ARGS…]`: runs a published application in its virtual
//! environment, and the hidden `avail enter` that builds that environment.
//!
//! `avail run` asks the client daemon to prepare the launch (the primary
//! feature block made local, the connection group's layers, what to run),
//! then starts `avail enter` — a fresh single-threaded process that enters
//! the namespaces ([`avail_client::sandbox`]) and becomes the application —
//! and waits for it. The application has `avail run`'s standard input,
//! output and error; SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to `avail run`
//! are passed on (SIGINT and SIGQUIT from a terminal reach the application
//! directly, as it is in the same process group); its exit status is `avail
//! run`'s, and an application killed by a signal kills `avail run` with the
//! same signal. The daemon learns when it exited (for usage reports).
//!
//! The user's copy-on-write layers live under `$XDG_DATA_HOME/avail/layers`
//! (`~/.local/share/avail/layers`), one per package or connection group;
//! `avail client repair` deletes them.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, anyhow};
use avail_client::protocol::{CallError, DEFAULT_SOCKET, Request, call};
use avail_client::sandbox::{Layers, enter_and_exec};
use clap::Args;
use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::progress::Bar;

/// `avail run`.
#[derive(Args)]
pub struct RunArgs {
    /// The client daemon's socket.
    #[arg(long, env = "AVAIL_CLIENT_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The application: its id, its package's name (the first application)
    /// or the file name of its target.
    app: String,
    /// Arguments, after those the package gives the application.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `avail enter` (internal: started by `avail run`).
#[derive(Args)]
pub struct EnterArgs {
    /// A package tree, highest priority first (repeated).
    #[arg(long = "lower", required = true)]
    lowers: Vec<PathBuf>,
    /// The user's copy-on-write layer.
    #[arg(long)]
    state: PathBuf,
    /// What to execute, then its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// Exit codes of `avail run` before the application starts, for `--help`.
pub const HELP: &str = "Once the application runs, its exit status is avail run's. Before \
that: 2 a wrong command line; 4 no such application is published to you; 69 the client \
daemon, a mirror or a connection group member is not available; 77 not allowed; 126 the \
environment could not be built; 127 the application's program is missing.";

/// The calling user's XDG data directory: `$XDG_DATA_HOME`, else
/// `~/.local/share`.
pub fn data_home() -> Result<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| anyhow!("neither XDG_DATA_HOME nor HOME is set"))
}

/// Where the calling user's copy-on-write layers live.
pub fn layers_dir() -> Result<PathBuf> {
    let data = data_home().context("no place for the application's own files")?;
    Ok(data.join("avail").join("layers"))
}

/// The daemon's answer, or the exit code of its failure.
pub fn ask(socket: &std::path::Path, request: &Request) -> Result<Result<Value, ExitCode>> {
    let bar = Bar::new("");
    let answer = call(socket, request, |p| {
        bar.set(p.done, p.total, p.bytes, &p.message)
    });
    bar.finish();
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(CallError::Failed(f)) => {
            eprintln!("error: {}", f.message);
            Ok(Err(ExitCode::from(f.kind.exit_status())))
        }
        Err(e @ CallError::Connect { .. }) => {
            eprintln!("error: {e}");
            Ok(Err(ExitCode::from(69)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `avail run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    // Where the layer goes is known before the daemon records a launch.
    let layers = match layers_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(126));
        }
    };
    let plan = match ask(
        &args.socket,
        &Request::Launch {
            app: args.app.clone(),
        },
    )? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let field = |name: &str| {
        plan[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the daemon's launch has no {name}"))
    };
    let target = field("target")?;
    let layer = field("layer")?;
    let launch_id: uuid::Uuid = field("launch_id")?.parse()?;
    let mut all_args = match plan["arguments"].as_str() {
        Some(text) => shell_words::split(text).with_context(|| {
            format!(
                "the package's arguments for {} do not parse: {text:?}",
                args.app
            )
        })?,
        None => Vec::new(),
    };
    all_args.extend(args.args);
    let lowers: Vec<String> = plan["lowers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    let state = layers.join(&layer);

    // The signals passed on; SIGINT and SIGQUIT only caught, so that a
    // terminal's reaches the application alone and avail run waits for it.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGINT, SIGQUIT])?;
    let signals_handle = signals.handle();
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("enter");
    for lower in &lowers {
        command.arg("--lower").arg(lower);
    }
    command
        .arg("--state")
        .arg(&state)
        .arg("--")
        .arg(&target)
        .args(&all_args);
    // The package's environment variables, expanded from this one.
    let variables = plan["environment"].as_array().into_iter().flatten();
    for (name, value) in variables.filter_map(|v| Some((v.get(0)?.as_str()?, v.get(1)?.as_str()?)))
    {
        command.env(name, expand(value, |n| std::env::var(n).ok()));
    }
    let mut child = command
        .spawn()
        .context("cannot start the application's environment")?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if matches!(signal, SIGINT | SIGQUIT) {
                continue;
            }
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let status = child.wait()?;
    signals_handle.close();
    let _ = forwarder.join();

    use std::os::unix::process::ExitStatusExt as _;
    let ended = Request::LaunchEnded {
        launch_id,
        exit_code: status.code(),
        signal: status.signal(),
    };
    if let Err(e) = call(&args.socket, &ended, |_| {}) {
        tracing::warn!(error = %e, "cannot tell the client daemon that the application exited");
    }
    if let Some(code) = status.code() {
        return Ok(ExitCode::from(code as u8));
    }
    if let Some(signal) = status.signal() {
        // Die of the same signal, as a shell expects of a command.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
        return Ok(ExitCode::from(128u8.wrapping_add(signal as u8)));
    }
    Ok(ExitCode::FAILURE)
}

/// `value` with `$NAME` and `${NAME}` replaced by `lookup(NAME)` (nothing
/// when unset); `$` before anything else stays as it is.
fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&lookup(name).unwrap_or_default());
            rest = next;
        }
    }
    out.push_str(rest);
    out
}

/// Runs `avail enter`: never returns but with an error.
pub fn enter(args: EnterArgs) -> Result<ExitCode> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("nothing to run"))?;
    let layers = Layers {
        lowers: args.lowers,
        state: args.state,
    };
    let err = enter_and_exec(&layers, program, rest);
    eprintln!("error: cannot run {program}: {err}");
    Ok(ExitCode::from(
        if err.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn package_variables_expand_from_the_launching_environment() {
        let env = |n: &str| match n {
            "PATH" => Some("/usr/bin:/bin".to_owned()),
            "HOME" => Some("/home/a".to_owned()),
            _ => None,
        };
        assert_eq!(
            expand("/opt/foo/bin:$PATH", env),
            "/opt/foo/bin:/usr/bin:/bin"
        );
        assert_eq!(expand("${HOME}/.foo", env), "/home/a/.foo");
        assert_eq!(expand("$UNSET-x", env), "-x");
        assert_eq!(
            expand("cost $5 and $ alone, ${unclosed", env),
            "cost  and $ alone, ${unclosed"
        );
        assert_eq!(expand("no variables", env), "no variables");
    }
}
