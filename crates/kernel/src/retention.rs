//! How long finished tasks stay in the kernel's live state (`retention.toml`'s
//! `[tasks]`, part of genesis).
//!
//! A task tree (a root task and every subtask ever made under it) is *finished* when
//! none of its tasks is open (completed, dead or cancelled, at every level) and no
//! open task elsewhere waits on one of them. A finished tree leaves the live state,
//! as one `task.retire` decision, when it has been finished for `keep_finished_for_ms`,
//! or when more than `keep_finished` tasks of newer finished trees are kept, whichever
//! comes first. The node writes what leaves to its task archive, from which it stays
//! readable; the board's lists, counts, snapshots and memory then hold live work only.

use serde::{Deserialize, Serialize};

/// Most trees one command retires: a backlog (a lowered rule, a burst of
/// completions) leaves over the following ticks instead of in one long decision.
pub const RETIRE_TREES_PER_COMMAND_MAX: usize = 256;
/// The smallest `keep_finished`: the newest finished trees stay readable from the
/// state, without the archive, while their callers read their answers.
pub const KEEP_FINISHED_MIN: u64 = 1;
/// The shortest `keep_finished_for`.
pub const KEEP_FINISHED_FOR_MIN_MS: u64 = 1_000;

/// The retention rule for finished tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// At most this many tasks of finished trees stay in the live state; the oldest
    /// finished trees leave first.
    pub keep_finished: u64,
    /// A finished tree leaves this long after it finished.
    pub keep_finished_for_ms: u64,
}

/// The shipped defaults: what the empty state holds until genesis installs
/// `retention.toml`.
impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig::defaults()
    }
}

impl RetentionConfig {
    /// 10 000 finished tasks, for at most seven days.
    pub fn defaults() -> RetentionConfig {
        RetentionConfig {
            keep_finished: 10_000,
            keep_finished_for_ms: 7 * 86_400_000,
        }
    }

    /// Why the rule cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.keep_finished < KEEP_FINISHED_MIN {
            return Err(format!("keep_finished is at least {KEEP_FINISHED_MIN}"));
        }
        if self.keep_finished_for_ms < KEEP_FINISHED_FOR_MIN_MS {
            return Err("keep_finished_for is at least 1s".to_string());
        }
        Ok(())
    }
}

/// Why a finished tree left the live state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireCause {
    /// Finished longer than `keep_finished_for`.
    Age,
    /// More than `keep_finished` newer finished tasks are kept.
    Count,
}
