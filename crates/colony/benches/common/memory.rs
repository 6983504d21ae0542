//! A process's resident memory, as the benchmarks read it (the bus's and TLS's).

use std::time::Duration;

/// The process's resident set, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resident memory once it stops falling (read every 100 ms, at most 3 s): an
/// allocator that returns freed pages to the system after a delay (mimalloc's purge)
/// would otherwise count memory already given back.
pub async fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid);
        if now >= last {
            return now;
        }
        last = now;
    }
    last
}
