//! Starting the real `colony` binary for tests.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[path = "../../../node/tests/common/tools.rs"]
pub mod tools;

pub use tools::*;

pub mod nats;

pub const COLONY: &str = env!("CARGO_BIN_EXE_colony");

/// Starts `colony up` on a free port and returns it with its base URL.
pub fn start(data: &Path) -> (Child, String) {
    start_with_config(
        data,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis"),
    )
}

/// The shipped genesis files but no kick artifacts, in a directory of the target that
/// every caller shares (for tests that count the log's records).
pub fn quiet_config() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp/quiet-genesis");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
    ] {
        // Copied through a temporary name: concurrent tests never see half a file.
        let tmp = dir.join(format!(
            "{file}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::copy(shipped.join(file), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
    dir
}

/// Starts `colony up` on the shipped genesis files without kick artifacts.
pub fn start_quiet(data: &Path) -> (Child, String) {
    start_with_config(data, &quiet_config())
}

/// The shipped genesis files copied to a new directory, with some replaced.
pub fn config_with(replaced: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
    ] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    for (file, text) in replaced {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    dir
}

/// Starts `colony up` with the given genesis directory.
pub fn start_with_config(data: &Path, config: &Path) -> (Child, String) {
    start_with_env(data, config, &[])
}

/// Starts `colony up` with the given genesis directory and extra environment.
pub fn start_with_env(data: &Path, config: &Path, env: &[(&str, &str)]) -> (Child, String) {
    start_with_args(data, config, &[], env)
}

/// Starts `colony up` with extra arguments and environment.
pub fn start_with_args(
    data: &Path,
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, String) {
    let (child, url, _) = start_with_link(data, config, args, env);
    (child, url)
}

/// Starts `colony up`; returns it with its base URL and the dashboard's link it
/// printed.
pub fn start_with_link(
    data: &Path,
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, String, String) {
    let mut child = Command::new(COLONY)
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        // COLONY_TEST_LOG (e.g. `colony_cluster=debug`) shows a node's log while
        // debugging a test.
        .env(
            "COLONY_LOG",
            std::env::var("COLONY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the colony binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // What `colony up` prints after `prefix`, up to the first space.
    let mut after = |prefix: &str| loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("colony up prints `{prefix}`"))
            .unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let url = after("colony: listening on ");
    let link = after("colony: dashboard at ");
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url, link)
}

/// Runs `colony ARGS` against the node; returns success and what it printed.
pub fn cli(url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(COLONY)
        .args(args)
        .env("COLONY_URL", url)
        .env("COLONY_TOKEN", token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
