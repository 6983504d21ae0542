//! What the swarm benchmark reads off the node and its own process: percentiles,
//! resident memory, the logs' bytes, and the decision log's actions in a window.

pub(crate) fn percentile(values: &mut [u64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index] as f64 / 1_000.0
}

pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// The decision records' actions between two times, counted (`GET /v1/audit`).
pub(crate) async fn actions_between(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    (from, until): (u64, u64),
) -> String {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut after = 0u64;
    loop {
        let page: serde_json::Value = http
            .get(format!("{url}/v1/audit?after={after}&limit=1000"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = page["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        for record in &records {
            let at = record["at_ms"].as_u64().unwrap_or(0);
            if (from..until).contains(&at) {
                let action = record["action"].as_str().unwrap_or("?").to_string();
                *counts.entry(action).or_default() += 1;
            }
        }
        after += records.len() as u64;
    }
    if counts.is_empty() {
        return "nothing".into();
    }
    counts
        .iter()
        .map(|(action, n)| format!("{action} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes of the command log and of the decision log.
pub(crate) fn log_bytes(data: &tempfile::TempDir) -> (u64, u64) {
    (
        dir_bytes(&data.path().join("commands")),
        dir_bytes(&data.path().join("audit")),
    )
}
