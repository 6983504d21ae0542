//! Where `colony worker --exec` runs a task's command: under bubblewrap, with limits.
//!
//! - **bubblewrap** (Debian's `bubblewrap`): the command sees the system's programs
//!   and libraries read-only (`/usr`, `/etc` and the `/bin`, `/lib` links), a fresh
//!   `/dev`, `/proc` and `/tmp`, and one private writable work directory (its
//!   `HOME` and current directory), made for the task and deleted after. Nothing else
//!   of the host: not the worker's files, not other tasks'. No network unless
//!   `--allow-net` (then it can also reach the node at `COLONY_URL`). It dies with
//!   the worker.
//! - **limits**: CPU seconds, address space and open files (`setrlimit`), applied by
//!   an intermediate process inside the sandbox (`colony sandbox-exec`, this binary,
//!   bound read-only) that also measures what the command used: its CPU time and
//!   peak memory (`getrusage` of its children). It reports them on a pipe the
//!   command never sees (descriptor 3, closed before the command starts), and the
//!   worker charges them to its own quotas as `compute_ms` and `memory_bytes`,
//!   reserved before the command starts.
//!
//! `--sandbox none` runs the command unsandboxed (still with the limits), and says
//! so loudly; `auto` (the default) uses bubblewrap when it is installed and refuses
//! to start the worker when it is not (it fails closed), saying how to install it or
//! to pass `--sandbox none`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// How a task's command is isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SandboxMode {
    /// bubblewrap when installed; otherwise the worker refuses to start (fails closed).
    Auto,
    /// bubblewrap, or the worker does not start.
    Bwrap,
    /// No isolation (limits still apply): the command can read and write whatever
    /// the worker can.
    None,
}

/// The sandbox flags of `colony worker`.
#[derive(Args, Clone, Debug)]
pub struct SandboxFlags {
    /// How each task's command is isolated.
    #[arg(long, value_enum, default_value = "auto")]
    pub sandbox: SandboxMode,
    /// Let the command use the network (and so reach the node).
    #[arg(long)]
    pub allow_net: bool,
    /// CPU time a command may use, in seconds (reserved as compute_ms before it
    /// starts; what it used is charged).
    #[arg(long, default_value_t = 10)]
    pub cpu_seconds: u64,
    /// Address space a command may use, in MiB (reserved as memory_bytes while it
    /// runs; its peak is recorded).
    #[arg(long, default_value_t = 256)]
    pub memory_mib: u64,
    /// Files a command may have open at once.
    #[arg(long, default_value_t = 256)]
    pub open_files: u64,
}

/// The sandbox as resolved when the worker starts.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub bwrap: Option<PathBuf>,
    pub flags: SandboxFlags,
}

impl Sandbox {
    /// Finds bubblewrap as `flags` ask; says loudly what isolation tasks get.
    pub fn resolve(flags: SandboxFlags) -> anyhow::Result<Sandbox> {
        let bwrap = find("bwrap");
        let bwrap = match (flags.sandbox, bwrap) {
            (SandboxMode::None, _) => {
                eprintln!(
                    "colony worker: WARNING: --sandbox none: task commands run unsandboxed, \
                     with the worker's access to files and network"
                );
                None
            }
            (SandboxMode::Bwrap, None) => anyhow::bail!(
                "--sandbox bwrap: bubblewrap is not installed (Debian: apt-get install bubblewrap)"
            ),
            // Fails closed: an operator who never reads the log must not run agent
            // code with the worker's whole host because a package was missing.
            (SandboxMode::Auto, None) => anyhow::bail!(
                "bubblewrap is not installed, so task commands cannot be sandboxed and the \
                 worker does not start: install it (Debian: apt-get install bubblewrap), or pass \
                 --sandbox none to run them unsandboxed with the worker's access to files and network"
            ),
            (_, Some(bwrap)) => Some(bwrap),
        };
        Ok(Sandbox { bwrap, flags })
    }

    pub fn cpu_ms(&self) -> u64 {
        self.flags.cpu_seconds.saturating_mul(1_000)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.flags.memory_mib.saturating_mul(1 << 20)
    }

    /// The command line that runs `exec` for one task in `workdir`, and the pipe on
    /// which what it used is reported once it ends ([`measured`]).
    pub fn command(
        &self,
        exec: &str,
        workdir: &Path,
    ) -> std::io::Result<(tokio::process::Command, std::io::PipeReader)> {
        use command_fds::{CommandFdExt, FdMapping};
        let me = std::env::current_exe()?;
        let (reader, writer) = std::io::pipe()?;
        let mut command = match &self.bwrap {
            Some(bwrap) => {
                let mut command = tokio::process::Command::new(bwrap);
                let me_text = me.to_string_lossy();
                command
                    .args(bwrap_args(workdir, self.flags.allow_net))
                    .args(["--ro-bind", &me_text, &me_text, "--"])
                    .arg(&me);
                command
            }
            None => tokio::process::Command::new(&me),
        };
        command
            .arg("sandbox-exec")
            .arg("--cpu-seconds")
            .arg(self.flags.cpu_seconds.to_string())
            .arg("--memory-bytes")
            .arg(self.memory_bytes().to_string())
            .arg("--open-files")
            .arg(self.flags.open_files.to_string())
            .arg("--report-fd")
            .arg(REPORT_FD.to_string())
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(exec)
            .current_dir(workdir)
            .env("HOME", workdir);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: writer.into(),
                child_fd: REPORT_FD,
            }])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok((command, reader))
    }
}

/// The descriptor on which `colony sandbox-exec` reports what the command used.
const REPORT_FD: i32 = 3;

/// bubblewrap's arguments: the system read-only, a fresh /dev, /proc and /tmp, the
/// work directory writable, every namespace unshared (the network unless allowed).
fn bwrap_args(workdir: &Path, allow_net: bool) -> Vec<String> {
    colony_node::sandbox::bwrap_args(&colony_node::sandbox::Jail {
        workdir: workdir.to_path_buf(),
        allow_net,
        ..Default::default()
    })
}

fn find(name: &str) -> Option<PathBuf> {
    colony_node::sandbox::find_program(name)
}

/// What a command used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// User and system CPU time, in milliseconds (rounded up).
    pub cpu_ms: u64,
    /// The largest resident set of any of its processes, in bytes.
    pub peak_bytes: u64,
}

/// What the report pipe says, once the command ended (every writer closed).
pub async fn measured(reader: std::io::PipeReader) -> Option<Measured> {
    use std::io::Read;
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut text).ok().map(|_| text)
    });
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()?
        .ok()??;
    serde_json::from_str(text.trim()).ok()
}

/// `colony sandbox-exec`'s arguments (run by the worker, not by people).
#[derive(Args, Clone, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    cpu_seconds: u64,
    #[arg(long)]
    memory_bytes: u64,
    #[arg(long)]
    open_files: u64,
    /// An open descriptor to report on (closed before the program starts).
    #[arg(long)]
    report_fd: i32,
    #[arg(trailing_var_arg = true, required = true)]
    program: Vec<String>,
}

/// Runs the program under the limits, writes what it used, and exits as it did.
///
/// The limits are set in the program's process between fork and exec, not in this
/// one: this binary's allocator (mimalloc) reserves address space ahead of use, so
/// an address-space limit on this process could refuse its own next allocation.
pub fn exec(args: ExecArgs) -> ExitCode {
    use nix::sys::resource::{getrusage, setrlimit, Resource, UsageWho};
    use std::os::unix::process::CommandExt;
    let limits = [
        (Resource::RLIMIT_CPU, args.cpu_seconds),
        (Resource::RLIMIT_AS, args.memory_bytes),
        (Resource::RLIMIT_NOFILE, args.open_files),
    ];
    // Checked here, where an error can still be told (the child's would only be an
    // exit): each limit must be one this process may set, as the child inherits
    // what this process may do.
    for (resource, value) in limits {
        let hard = nix::sys::resource::getrlimit(resource).map(|(_, hard)| hard);
        if hard.is_ok_and(|hard| value > hard) {
            eprintln!(
                "colony sandbox-exec: cannot limit {resource:?} to {value}: above this process's hard limit"
            );
            return ExitCode::from(125);
        }
    }
    // SAFETY: the worker opened this descriptor for this process (a pipe mapped to
    // `--report-fd`); nothing else here owns or closes it.
    let mut report =
        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(args.report_fd) };
    // The program must not inherit it: what it used is not its to say.
    if let Err(error) = nix::fcntl::fcntl(
        &report,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        eprintln!(
            "colony sandbox-exec: --report-fd {}: {error}",
            args.report_fd
        );
        return ExitCode::from(125);
    }
    let (program, rest) = args.program.split_first().expect("required");
    let mut command = std::process::Command::new(program);
    command.args(rest);
    // SAFETY: runs in the forked child before exec; `setrlimit` is a plain system
    // call (async-signal-safe) and nothing here allocates or takes a lock.
    unsafe {
        command.pre_exec(move || {
            for (resource, value) in limits {
                setrlimit(resource, value, value).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let status = match command.status() {
        Ok(status) => status,
        Err(error) => {
            eprintln!("colony sandbox-exec: cannot run {program}: {error}");
            return ExitCode::from(126);
        }
    };
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let measured = usage.map_or_else(Measured::default, |usage| {
        let micros =
            |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        Measured {
            cpu_ms: (micros(usage.user_time()) + micros(usage.system_time())).div_ceil(1_000),
            // Linux counts ru_maxrss in KiB.
            peak_bytes: (usage.max_rss().max(0) as u64).saturating_mul(1_024),
        }
    });
    {
        use std::io::Write;
        let _ = writeln!(
            report,
            "{}",
            serde_json::to_string(&measured).unwrap_or_default()
        );
    }
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}
