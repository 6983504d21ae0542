//! What the runtime says of an artifact: its state, what it used, its last error
//! and its log.

use std::collections::VecDeque;

use serde::Serialize;

/// Where an artifact is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Taking turns.
    Running,
    /// Its `run` said it waits for a message or a task.
    Idle,
    /// Out of a quota: waits for a flow to refill, or for a grant.
    Exhausted,
    /// Not meant to run (stopped, or `run` said it is done).
    #[default]
    Stopped,
    /// It trapped or answered nonsense; `start` runs it afresh.
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Idle => "idle",
            RunState::Exhausted => "exhausted",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
        }
    }
}

/// One line an artifact logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub at_ms: u64,
    pub text: String,
}

/// What an artifact used since it was last started: the API's type, counted here.
pub type Usage = colony_api::artifacts::ArtifactUsage;

/// An artifact as the runtime sees it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub state: RunState,
    pub usage: Usage,
    pub last_error: Option<String>,
    /// The resource it is exhausted of, and when a flow refills.
    pub exhausted: Option<(String, Option<u64>)>,
    pub logs: VecDeque<LogLine>,
    pub log_seq: u64,
}
