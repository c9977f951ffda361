//! Running PostgreSQL's programs: as the `postgres` system user through
//! `runuser` when the tests run as root (PostgreSQL refuses to run as root),
//! directly otherwise, and always with a deadline so that a stuck server
//! fails a test instead of hanging it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How the server programs are run.
#[derive(Debug)]
pub(crate) struct Runner {
    /// `Some` when we are root: the `runuser` program and the ids of `postgres`.
    as_postgres: Option<AsPostgres>,
}

#[derive(Debug)]
struct AsPostgres {
    runuser: PathBuf,
    uid: u32,
    gid: u32,
}

impl Runner {
    /// The runner for this process, decided once.
    pub(crate) fn get() -> Result<&'static Runner> {
        static RUNNER: OnceLock<Result<Runner, String>> = OnceLock::new();
        RUNNER
            .get_or_init(|| Runner::detect().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn detect() -> Result<Runner> {
        if effective_uid()? != 0 {
            return Ok(Runner { as_postgres: None });
        }
        let runuser = [
            "/usr/sbin/runuser",
            "/sbin/runuser",
            "/usr/bin/runuser",
            "/bin/runuser",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("runuser"));
        let id = |flag: &str| -> Result<u32> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("running `id`")?;
            if !out.status.success() {
                bail!(
                    "running as root, but there is no `postgres` user to run PostgreSQL as \
                     (PostgreSQL refuses to run as root; scripts/test installs the postgresql \
                     package, which creates it): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("parsing the output of `id`")
        };
        Ok(Runner {
            as_postgres: Some(AsPostgres {
                runuser,
                uid: id("-u")?,
                gid: id("-g")?,
            }),
        })
    }

    /// A command that runs `program` as the user that owns the servers, in
    /// `cwd`, without any `PG*` variable of the test environment.
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = match &self.as_postgres {
            Some(p) => {
                let mut cmd = Command::new(&p.runuser);
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        let pg_vars: Vec<OsString> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| k.to_string_lossy().starts_with("PG"))
            .collect();
        for k in pg_vars {
            cmd.env_remove(k);
        }
        cmd.env("LC_ALL", "C").current_dir(cwd);
        cmd
    }

    /// Whether this process is root (and so runs the servers through `runuser`).
    pub(crate) fn is_root(&self) -> bool {
        self.as_postgres.is_some()
    }

    /// Makes `path` owned by the user the servers run as (a no-op unless root).
    pub(crate) fn give(&self, path: &Path) -> Result<()> {
        if let Some(p) = &self.as_postgres {
            std::os::unix::fs::chown(path, Some(p.uid), Some(p.gid))
                .with_context(|| format!("chown postgres {}", path.display()))?;
        }
        Ok(())
    }
}

fn effective_uid() -> Result<u32> {
    // /proc/self belongs to the effective user of this process.
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing the output of `id -u`")
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Both streams, for error messages.
    pub(crate) fn printed(&self) -> String {
        let mut s = String::new();
        for part in [self.stderr.trim(), self.stdout.trim()] {
            if !part.is_empty() {
                if !s.is_empty() {
                    s.push('\n');
                }
                s.push_str(part);
            }
        }
        s
    }
}

/// A command line for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, feeding it `stdin`, killing it after `timeout`.
/// A non-zero exit is not an error here; the caller decides.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<Output> {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting `{what}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_owned();
        // A broken pipe only means the program stopped early; its exit says why.
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_deadline(&mut child, timeout);
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| "<output not available>".to_owned())
    };
    let out = Output {
        status: match status {
            Some(s) => s,
            None => {
                let (stdout, stderr) = (collect(stdout), collect(stderr));
                bail!(
                    "`{what}` did not finish within {timeout:?} and was killed\n{}\n{}",
                    stderr.trim(),
                    stdout.trim()
                );
            }
        },
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    Ok(out)
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Waits for `child` until `timeout`; past it, asks it to stop (SIGTERM, which
/// `runuser` passes on), then kills it, and returns `None`.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            _ => break,
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let grace = Instant::now() + Duration::from_secs(2);
    while Instant::now() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Send `signal` (`TERM`, `QUIT`, …) to `child` and wait for it to exit, at
/// most `timeout`; past it, it is killed and the error names `what`. Nothing when
/// it has exited already.
pub(crate) fn stop(child: &mut Child, signal: &str, timeout: Duration, what: &str) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{signal} {} ({what}) failed", child.id());
    }
    // Past the deadline, wait_deadline has killed it.
    if wait_deadline(child, timeout).is_none() {
        bail!("{what} did not exit within {timeout:?} of SIG{signal}");
    }
    Ok(())
}
