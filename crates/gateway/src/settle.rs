//! Settling a call exactly once: the actual cost committed (the rest of the
//! reservation refunded) and the task charged in one `Settle` decision, or the whole
//! reservation released when the call never happened, or released by `Drop` when
//! the call ended without either (a caller gone, a panic).

use colony_kernel::{CommandBody, PrincipalId};
use colony_pipeline::{Answered, Submitter};

use crate::Admission;

/// A command sent until decided, on a task of its own.
pub(crate) type Background =
    tokio::task::JoinHandle<Result<colony_pipeline::Outcome, colony_pipeline::SubmitError>>;

/// One call's reservation, until it is settled.
pub struct Settlement {
    pub(crate) submitter: Submitter,
    pub(crate) caller: PrincipalId,
    pub(crate) reservation: u64,
    /// `(address, lease token)` when the call is charged to a task.
    pub(crate) task: Option<(colony_kernel::TaskAddress, u64)>,
    pub(crate) admission: Option<Admission>,
    pub(crate) done: bool,
    /// What the call was, for the warning when it ends unsettled.
    pub(crate) note: String,
    /// The call's span: the settlement's figures go on it, its decision under it.
    pub(crate) trace: crate::CallTrace,
}

impl Settlement {
    /// Commits `actual` micro-dollars for `tokens` (input, output) on `model`. The
    /// returned task finishes once the commit (and the task's charge) are decided:
    /// a call made for a task waits for it, so that the charge lands while the
    /// caller still holds the lease.
    pub(crate) fn settle(
        &mut self,
        model: &str,
        tokens: (u64, u64),
        actual: u64,
        how: &str,
    ) -> Option<Background> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        if let Some(admission) = self.admission.take() {
            admission.record_tokens(tokens.0 + tokens.1);
        }
        let (caller, reservation, task) = (self.caller, self.reservation, self.task.clone());
        let justification = format!(
            "llm call to {model}: {} input + {} output tokens = {actual} micro-USD ({how}){}",
            tokens.0,
            tokens.1,
            task.as_ref()
                .map(|(a, _)| format!(", for task {a}"))
                .unwrap_or_default()
        );
        self.trace.settled(model, tokens, actual, how);
        // One decision: the commit and the task's charge land together. Sent until
        // decided: a full queue or a lost cluster link never loses what a call cost.
        let settled = self.submitter.submit_in_background(
            caller,
            justification,
            CommandBody::Settle {
                reservation,
                actual,
                task,
            },
            Answered::WhenDecided,
        );
        Some(traced(self.trace.kernel_pending("settle"), settled))
    }

    /// Settles before the answer goes out when the call is charged to a task (so
    /// that the charge lands while the caller holds the lease), in the background
    /// otherwise.
    pub(crate) async fn settle_answered(
        &mut self,
        model: &str,
        tokens: (u64, u64),
        actual: u64,
        how: &str,
    ) {
        let settled = self.settle(model, tokens, actual, how);
        if let (true, Some(settled)) = (self.task.is_some(), settled) {
            // The outbox says loudly why, if it gave up (the node stopping).
            if let Err(panic) = settled.await {
                tracing::error!("the settlement's task failed: {panic}");
            }
        }
    }

    /// Gives the whole reservation back (the call never happened).
    pub(crate) fn release(&mut self, why: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.admission.take();
        let justification = format!("llm call not made: {why}");
        // Sent until decided; nobody waits for it.
        let released = self.submitter.submit_in_background(
            self.caller,
            justification,
            CommandBody::Release {
                reservation: self.reservation,
            },
            Answered::WhenDecided,
        );
        drop(traced(self.trace.kernel_pending("release"), released));
    }

    /// Whether the call is charged to a task (and so settles before it answers).
    pub(crate) fn for_task(&self) -> bool {
        self.task.is_some()
    }
}

/// A command sent in the background, its span (when traced) ended once it is
/// decided.
fn traced(pending: Option<crate::trace::Pending>, sent: Background) -> Background {
    let Some(mut pending) = pending else {
        return sent;
    };
    tokio::spawn(async move {
        match sent.await {
            Ok(outcome) => {
                crate::trace::decided(&mut pending.span, &outcome);
                outcome
            }
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(colony_pipeline::SubmitError::shutting_down()),
        }
    })
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                reservation = self.reservation,
                "an LLM call ended without settling: {}",
                self.note
            );
            self.release("the call ended before it settled");
        }
    }
}
