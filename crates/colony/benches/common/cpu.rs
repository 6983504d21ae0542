//! A process's CPU time, for the benchmarks that print CPU beside throughput.

/// CPU time (user + system) the process `pid` has used, in nanoseconds.
pub fn cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th,
    // stime the 13th; in clock ticks.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = 100; // sysconf(_SC_CLK_TCK) on Linux
    ticks * 1_000_000_000 / per_second
}
