//! bubblewrap's command line for a program Colony runs for someone else: a worker's
//! task command (`colony worker --exec`) and an upstream MCP server run over stdio
//! (`mcp.toml`). The program sees the system's programs and libraries read-only
//! (`/usr`, `/etc` and the `/bin`, `/lib` links), a fresh `/dev`, `/proc` and
//! `/tmp`, one private writable work directory (its `HOME` and current directory),
//! the paths it is given, and nothing else of the host; every namespace is unshared
//! (the network too, unless allowed), and it dies with its parent.

use std::path::{Path, PathBuf};

/// What one sandboxed program may see besides the system.
#[derive(Clone, Debug, Default)]
pub struct Jail {
    /// Its private, writable work directory (`HOME`, current directory).
    pub workdir: PathBuf,
    /// Paths it may read (bound read-only at the same place).
    pub read_only: Vec<PathBuf>,
    /// Paths it may write (bound read-write at the same place).
    pub read_write: Vec<PathBuf>,
    /// Whether it keeps the host's network.
    pub allow_net: bool,
}

/// bubblewrap's arguments for `jail` (the program and its arguments follow `--`).
pub fn bwrap_args(jail: &Jail) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    push(&["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64"] {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(target) => push(&["--symlink", &target.to_string_lossy(), top]),
            Err(_) if path.is_dir() => push(&["--ro-bind", top, top]),
            Err(_) => {}
        }
    }
    push(&["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    for (paths, bind) in [(&jail.read_only, "--ro-bind"), (&jail.read_write, "--bind")] {
        for path in paths {
            let path = path.to_string_lossy();
            push(&[bind, &path, &path]);
        }
    }
    let work = jail.workdir.to_string_lossy();
    push(&[
        "--bind", &work, &work, "--chdir", &work, "--setenv", "HOME", &work,
    ]);
    push(&["--unshare-all", "--die-with-parent", "--new-session"]);
    if jail.allow_net {
        push(&["--share-net"]);
    }
    args
}

/// `name` on the `PATH`, if there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}
