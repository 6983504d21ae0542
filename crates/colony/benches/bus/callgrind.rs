//! `cargo bench -p colony --bench bus -- callgrind`: instructions per delivery,
//! counted by valgrind's callgrind in the node while a fixed workload runs
//! (instrumentation is switched on only for it, with `callgrind_control`), so that a
//! change to the bus's hot path is measured in a figure that does not move with the
//! machine's load. The dumps stay in `target/callgrind/` for `callgrind_annotate`.
//! Needs `valgrind` (Debian package of that name). Colony only: nats-server (Go)
//! under valgrind accepts connections but delivers nothing within minutes, so the
//! peer is compared by wall clock and CPU time in the main benchmark.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    publish_from_all, publish_many, run_subscribers, start_wrapped, Client, Kind, Publisher,
};

/// The fan-out workload: one publisher, this many subscribers, messages of 128 B.
const FAN_OUT_SUBSCRIBERS: usize = 50;
const FAN_OUT_MESSAGES: u64 = 2_000;
/// Many-to-many: publishers (each on its own subject), subscribers to all.
const MANY_PUBLISHERS: usize = 10;
const MANY_SUBSCRIBERS: usize = 10;
const MANY_MESSAGES_EACH: u64 = 200;

pub(super) async fn run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/callgrind");
    std::fs::create_dir_all(&dir).unwrap();
    let (fan_out, many) = measure(Kind::Colony, &dir).await;
    println!();
    println!("| server | fan-out 1x{FAN_OUT_SUBSCRIBERS}: instructions per delivery | many-to-many {MANY_PUBLISHERS}x{MANY_SUBSCRIBERS}: instructions per delivery |");
    println!("|---|---|---|");
    println!("| colony | {fan_out:.0} | {many:.0} |");
}

/// Instructions per delivery of the fan-out and the many-to-many workloads.
async fn measure(kind: Kind, dir: &Path) -> (f64, f64) {
    let out = dir.join(format!("{}.%p", kind.name()));
    let wrapper: Vec<String> = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--callgrind-out-file={}", out.display())])
    .collect();
    let server = start_wrapped(kind, &wrapper, Duration::from_secs(600)).await;
    let pid = server.child.id();
    let epoch = Instant::now();
    let size = 128;

    // Fan-out.
    let mut subscribers = Vec::new();
    for _ in 0..FAN_OUT_SUBSCRIBERS {
        let mut client = Client::connect(&server, false).await;
        client.subscribe(&["bench.fan".to_string()]).await;
        subscribers.push(client);
    }
    let mut publisher = Publisher::connect(&server).await;
    let handles = run_subscribers(subscribers, FAN_OUT_MESSAGES, epoch, false).await;
    control(pid, &["-z"]);
    control(pid, &["-i", "on"]);
    publish_many(&mut publisher, "bench.fan", FAN_OUT_MESSAGES, epoch, size).await;
    for handle in handles {
        handle.await.unwrap();
    }
    control(pid, &["-i", "off"]);
    let fan_out =
        dump(pid, dir, kind, "fan-out") / (FAN_OUT_MESSAGES as f64 * FAN_OUT_SUBSCRIBERS as f64);
    println!(
        "{:>12}: fan-out 1 -> {FAN_OUT_SUBSCRIBERS}, {FAN_OUT_MESSAGES} messages: {fan_out:.0} instructions per delivery",
        kind.name()
    );
    drop(publisher);

    // Many to many (each publisher on its own `bench.m.<index>`).
    let mut subscribers = Vec::new();
    for _ in 0..MANY_SUBSCRIBERS {
        let mut client = Client::connect(&server, false).await;
        client.subscribe(&["bench.m.*".to_string()]).await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for _ in 0..MANY_PUBLISHERS {
        publishers.push(Publisher::connect(&server).await);
    }
    let total = MANY_MESSAGES_EACH * MANY_PUBLISHERS as u64;
    let handles = run_subscribers(subscribers, total, epoch, false).await;
    control(pid, &["-z"]);
    control(pid, &["-i", "on"]);
    let keep = publish_from_all(publishers, MANY_MESSAGES_EACH, epoch, size).await;
    for handle in handles {
        handle.await.unwrap();
    }
    control(pid, &["-i", "off"]);
    let many = dump(pid, dir, kind, "many-to-many") / (total as f64 * MANY_SUBSCRIBERS as f64);
    println!(
        "{:>12}: many-to-many {MANY_PUBLISHERS} x {MANY_SUBSCRIBERS}, {total} messages: {many:.0} instructions per delivery",
        kind.name()
    );
    drop(keep);
    (fan_out, many)
}

/// `callgrind_control ARGS PID`, which the server picks up at its next scheduling
/// point.
fn control(pid: u32, args: &[&str]) {
    let status = std::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("callgrind_control runs (apt-get install valgrind)");
    assert!(status.success(), "callgrind_control {args:?} failed");
}

/// Dumps the counts since the last zeroing as `what`; the instructions they hold.
fn dump(pid: u32, dir: &Path, kind: Kind, what: &str) -> f64 {
    let before: Vec<PathBuf> = dumps(dir, kind, pid);
    control(pid, &["-d", what]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let file = loop {
        if let Some(file) = dumps(dir, kind, pid)
            .into_iter()
            .find(|f| !before.contains(f))
        {
            break file;
        }
        assert!(Instant::now() < deadline, "no callgrind dump for {what}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The dump is complete once its last line, `totals:`, is in it (the `summary:`
    // near its top is not the count).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let total = text
            .lines()
            .find_map(|line| line.strip_prefix("totals:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok());
        if let Some(total) = total {
            println!("{:>12}: {what} dump: {}", kind.name(), file.display());
            return total;
        }
        assert!(
            Instant::now() < deadline,
            "the dump {} is not complete",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dump files of the server's process (`<kind>.<pid>.<n>`).
fn dumps(dir: &Path, kind: Kind, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{}.{pid}.", kind.name());
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect()
}
