//! A process's CPU time and its threads' sleeps, for the benchmarks that print them
//! beside throughput.

/// CPU time the process `pid` has used, in nanoseconds: the sum of its threads'
/// time on a CPU as the scheduler counts it (`/proc/PID/task/*/schedstat`, in
/// nanoseconds; `/proc/PID/stat` counts in 10 ms ticks, a sixth of a quick
/// workload's CPU). A thread that ended takes its time with it: the servers
/// measured keep their threads for the life of the process.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        panic!("process {pid} is not running");
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Times the threads of process `pid` gave up the CPU to wait (their
/// `voluntary_ctxt_switches`, summed): a thread's sleeps between batches of work.
#[allow(dead_code)] // not every benchmark prints them
pub fn sleeps(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        panic!("process {pid} is not running");
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|value| value.trim().parse::<u64>().ok())
        })
        .sum()
}
