//! A process's CPU time and its threads' sleeps, for the benchmarks that print them
//! beside throughput.

/// CPU time the process `pid` has used, in nanoseconds: the sum of its threads'
/// time on a CPU as the scheduler counts it (`/proc/PID/task/*/schedstat`, in
/// nanoseconds; `/proc/PID/stat` counts in 10 ms ticks, a sixth of a quick
/// workload's CPU). A thread that ended takes its time with it: the servers
/// measured keep their threads for the life of the process.
pub fn cpu_ns(pid: u32) -> u64 {
    sum_over_threads(pid, "schedstat", on_cpu_ns)
}

/// CPU time of process `pid`'s threads, in nanoseconds, summed by thread name.
#[allow(dead_code)] // not every benchmark prints them
pub fn cpu_ns_by_name(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in threads(pid) {
        let read = |file| std::fs::read_to_string(task.join(file)).ok();
        if let (Some(name), Some(ns)) = (
            read("comm"),
            read("schedstat").as_deref().and_then(on_cpu_ns),
        ) {
            *by_name.entry(name.trim().to_string()).or_insert(0) += ns;
        }
    }
    by_name
}

/// A thread's time on a CPU, from its `schedstat`.
fn on_cpu_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// Times the threads of process `pid` gave up the CPU to wait (their
/// `voluntary_ctxt_switches`, summed): a thread's sleeps between batches of work.
#[allow(dead_code)] // not every benchmark prints them
pub fn sleeps(pid: u32) -> u64 {
    sum_over_threads(pid, "status", |status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum over the threads of process `pid` of what `read` finds in each one's
/// `/proc/PID/task/TID/<file>` (a thread that ends meanwhile counts nothing).
fn sum_over_threads(pid: u32, file: &str, read: impl Fn(&str) -> Option<u64>) -> u64 {
    threads(pid)
        .filter_map(|task| std::fs::read_to_string(task.join(file)).ok())
        .filter_map(|text| read(&text))
        .sum()
}

/// The `/proc/PID/task/TID` directories of process `pid`'s threads.
fn threads(pid: u32) -> impl Iterator<Item = std::path::PathBuf> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        panic!("process {pid} is not running");
    };
    tasks.filter_map(Result::ok).map(|task| task.path())
}
