//! Starting the real `colony` binary for tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const COLONY: &str = env!("CARGO_BIN_EXE_colony");

/// Starts `colony up` on a free port and returns it with its base URL.
pub fn start(data: &Path) -> (Child, String) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let mut child = Command::new(COLONY)
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .env("COLONY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the colony binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("colony up prints where it listens")
            .unwrap();
        if let Some(rest) = line.strip_prefix("colony: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}
