//! Whether a token's scopes give what a route needs (the scope each route needs is
//! in the route table, `api/routes.rs`). Checked at the edge, where a token is
//! presented; the kernel still decides by the principal's roles. `docs/api.md` lists
//! the matrix, and `tests/authorization.rs` holds the code to it.
//!
//! - `*` (a principal's first token): every scope.
//! - `read`: every `GET` (but the bus).
//! - `llm`: the gateway's calls. `ledger`: `/v1/ledger/...` actions. `tasks`: the
//!   board's and worker sessions' actions. `governance`: proposals, votes, releasing
//!   a quarantine. `spawn`: creating principals (an admin's any; anyone else's
//!   children under itself) and removing them, deploying, starting and stopping
//!   artifacts; `admin` includes it. `admin`:
//!   streams. `tokens`:
//!   making and revoking tokens (no wider than the token used). `bus`: the bus, every
//!   subject its roles allow; `bus:PATTERN`: only subjects matching it.
//! - `task:ADDRESS`: reading and acting on that task and its subtasks, and LLM calls
//!   made for them (`X-Colony-Task`): what a worker hands the command it runs.

/// Whether `scopes` give `need` for a request on `path` (`X-Colony-Task`: `task`).
pub fn allows(scopes: &[String], need: &str, path: &str, task: Option<&str>) -> bool {
    scopes.iter().any(|scope| {
        scope == "*"
            || scope == need
            || (need == "bus" && scope.starts_with("bus:"))
            || (need == "spawn" && scope == "admin")
            || scope
                .strip_prefix("task:")
                .is_some_and(|address| task_scope_allows(address, need, path, task))
    })
}

/// A `task:ADDRESS` scope: the task's own routes and LLM calls made for it.
fn task_scope_allows(address: &str, need: &str, path: &str, task: Option<&str>) -> bool {
    let within = |other: &str| {
        other == address
            || other
                .strip_prefix(address)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    match need {
        "llm" => task.is_some_and(within),
        "tasks" | "read" => path
            .strip_prefix("/v1/tasks/")
            .map(|rest| rest.split('/').next().unwrap_or(""))
            .is_some_and(within),
        _ => false,
    }
}

/// The subject patterns a token's bus scope is limited to (`None`: not limited).
pub fn bus_subjects(scopes: &[String]) -> Option<Vec<String>> {
    if scopes.iter().any(|s| s == "*" || s == "bus") {
        return None;
    }
    Some(
        scopes
            .iter()
            .filter_map(|s| s.strip_prefix("bus:").map(str::to_string))
            .collect(),
    )
}

/// Whether every scope in `wanted` is within `held` (a token makes no wider token).
pub fn within(held: &[String], wanted: &[String]) -> bool {
    if held.iter().any(|s| s == "*") {
        return true;
    }
    wanted.iter().all(|scope| held.contains(scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_task_scope_reaches_its_task_and_subtasks_only() {
        let held = scopes(&["task:0.7.1.00001"]);
        assert!(allows(
            &held,
            "tasks",
            "/v1/tasks/0.7.1.00001/complete",
            None
        ));
        assert!(allows(&held, "tasks", "/v1/tasks/0.7.1.00001.2/fail", None));
        assert!(!allows(&held, "tasks", "/v1/tasks/0.7.1.000010/fail", None));
        assert!(!allows(&held, "tasks", "/v1/tasks/claim", None));
        assert!(allows(
            &held,
            "llm",
            "/v1/chat/completions",
            Some("0.7.1.00001")
        ));
        assert!(!allows(&held, "llm", "/v1/chat/completions", None));
        assert!(!allows(&held, "ledger", "/v1/ledger/reserve", None));
    }

    #[test]
    fn tokens_are_made_no_wider() {
        assert!(within(&scopes(&["*"]), &scopes(&["admin"])));
        assert!(within(&scopes(&["llm", "read"]), &scopes(&["llm"])));
        assert!(!within(&scopes(&["llm"]), &scopes(&["llm", "ledger"])));
    }
}
