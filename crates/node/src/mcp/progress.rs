//! `notifications/progress` for a call that waits, sent only when the client asked
//! (its request's `_meta.progressToken`). Over Streamable HTTP the answer then
//! becomes an event stream (rmcp falls back from JSON to SSE at the first
//! notification), so the client hears of the wait while the request stays open.

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};

/// How often a waiting call says it still waits.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Where one call's progress goes.
pub(crate) struct Progress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
    /// Progress must grow with every notification.
    last: f64,
}

impl Progress {
    /// The call's progress channel, if its client asked for one.
    pub(crate) fn of(context: &RequestContext<RoleServer>) -> Option<Progress> {
        let token = context.meta.get_progress_token()?;
        Some(Progress {
            peer: context.peer.clone(),
            token,
            last: 0.0,
        })
    }

    /// Tells the client `message`, at `progress` of `total` (seconds waited of the
    /// most it may wait). A client that left is not an error: the wait goes on
    /// until the call is cancelled.
    pub(crate) async fn tell(&mut self, progress: f64, total: Option<f64>, message: String) {
        // Strictly increasing, as the protocol asks.
        let progress = if progress > self.last {
            progress
        } else {
            self.last + 0.001
        };
        self.last = progress;
        let mut param =
            ProgressNotificationParam::new(self.token.clone(), progress).with_message(message);
        if let Some(total) = total {
            param = param.with_total(total);
        }
        if let Err(error) = self.peer.notify_progress(param).await {
            tracing::debug!("a progress notification was not sent: {error}");
        }
    }
}
