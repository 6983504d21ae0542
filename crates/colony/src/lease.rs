//! Holding a claim: the lease's holder acting on its task, renewing it while work
//! runs, the attempt's deadline, and the process group of a command, stopped whole.

use std::time::Duration;

use colony_api::tasks::{Claimed, LeaseRequest, TaskView};

use crate::client::{ApiFailure, Client};

/// The HTTP status of an answer that says the claim or the session is over (409: the
/// lease was lost, cancelled or timed out; 410: the session is gone).
pub(crate) fn is_gone(error: &anyhow::Error) -> Option<u16> {
    error
        .downcast_ref::<ApiFailure>()
        .map(|f| f.status)
        .filter(|s| *s == 409 || *s == 410)
}

/// The holder of a task's lease, acting on it.
pub(crate) struct Lease<'a> {
    pub(crate) client: &'a Client,
    pub(crate) address: &'a str,
    pub(crate) token: u64,
}

impl Lease<'_> {
    /// `POST /v1/tasks/{address}/{action}` with the lease's token.
    pub(crate) async fn act(
        &self,
        action: &str,
        request: LeaseRequest,
    ) -> anyhow::Result<TaskView> {
        let request = LeaseRequest {
            lease_token: self.token,
            ..request
        };
        let path = format!("/v1/tasks/{}/{action}", self.address);
        self.client.post_as(&path, &request).await
    }

    /// Fails the attempt, saying why.
    pub(crate) async fn fail(&self, reason: String) -> anyhow::Result<TaskView> {
        let request = LeaseRequest {
            reason: Some(reason),
            ..LeaseRequest::default()
        };
        self.act("fail", request).await
    }
}

/// Runs `work` while the claim holds: renews the lease every third of it, and gives
/// up on `work` (dropping it, which abandons a call in flight) when the attempt's
/// deadline passes or the node answers that the claim is lost (cancelled, timed
/// out, reassigned); then `Err` says why.
pub(crate) async fn while_held<T>(
    lease: &Lease<'_>,
    claimed: &Claimed,
    work: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let period = Duration::from_millis((task_lease_ms(claimed) / 3).max(50));
    let deadline = tokio::time::Instant::now() + until(claimed.lease.attempt_deadline_ms);
    let renewing = async {
        let mut renew = tokio::time::interval(period);
        renew.tick().await;
        loop {
            renew.tick().await;
            match lease.act("heartbeat", LeaseRequest::default()).await {
                Err(error) if is_gone(&error).is_some() => return format!("{error:#}"),
                // A node briefly unreachable: the lease outlives a missed renewal.
                Err(error) => eprintln!("colony worker: renewing {}: {error:#}", lease.address),
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        done = work => Ok(done),
        why = renewing => Err(why),
        _ = tokio::time::sleep_until(deadline) => Err(format!(
            "its attempt timed out (attempt_timeout {} ms)",
            claimed.task.attempt_timeout_ms
        )),
    }
}

/// The command's process group: killed whole (the command and everything it
/// started), when its attempt times out, its claim is lost, or the worker goes.
/// Signalled only while its leader is unreaped, when the number cannot have been
/// reused by another group.
pub(crate) struct ProcessGroup(pub(crate) Option<u32>);

impl ProcessGroup {
    pub(crate) fn kill(&self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // Already gone is fine: nothing is left to stop.
            let _gone = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long from now until `at_ms` (Unix milliseconds); zero when it has passed.
pub(crate) fn until(at_ms: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Duration::from_millis(at_ms.saturating_sub(now))
}

pub(crate) fn task_lease_ms(claimed: &Claimed) -> u64 {
    let expires = claimed.lease.expires_at_ms;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    expires.saturating_sub(now).max(300)
}
