//! Subscriptions to task resources: a `subscriptions/listen` request (protocol
//! 2026-07-28) naming `colony://tasks/{address}` URIs stays open, and the node sends
//! `notifications/resources/updated` on it whenever the kernel decides something
//! about one of those tasks or a task under it (a claim, a checkpoint, a subtask's
//! completion, a retirement). The client then reads the resource again.
//!
//! Nothing is parked per client but the open request itself: the watches live in
//! `TaskWatches` (`watches.rs`). The caller's token is checked again before
//! every announcement (a revoked token ends the stream), and the node ends every
//! stream gracefully when it stops.

use rmcp::model::SubscriptionFilter;
use rmcp::service::SubscriptionContext;
use rmcp::ErrorData as McpError;

use super::resources::{task_address, TASK_PREFIX};
use super::server::ColonyMcp;
use super::watches::URIS_PER_LISTEN_MAX;

/// What a `subscriptions/listen` request may have: updates of the task resources
/// it names (the first [`URIS_PER_LISTEN_MAX`] well-formed ones), nothing else.
pub(crate) fn accepted(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let uris: Vec<String> = requested
        .resource_subscriptions
        .iter()
        .flatten()
        .filter(|uri| task_address(uri).is_some())
        .take(URIS_PER_LISTEN_MAX)
        .cloned()
        .collect();
    SubscriptionFilter::builder()
        .resource_subscriptions(uris)
        .build()
}

impl ColonyMcp {
    /// Runs one `subscriptions/listen` stream until the client cancels it, its token
    /// stops being valid, or the node stops.
    pub(crate) async fn serve_listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let (caller, token) = self.caller(context.request_context())?;
        let addresses: Vec<String> = context
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .filter_map(|uri| task_address(uri).map(str::to_string))
            .collect();
        if addresses.is_empty() {
            // Nothing accepted: the stream ends at once.
            return Ok(());
        }
        if !ColonyMcp::may_read(&caller, &format!("/v1/tasks/{}", addresses[0])) {
            return Err(McpError::invalid_request(
                "watching tasks needs a token with the `read` scope",
                None,
            ));
        }
        let guard = self
            .watches
            .watch(caller.id, &addresses)
            .map_err(|why| McpError::invalid_request(why, None))?;
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                _ = guard.watch.wake.notified() => {}
            }
            if self.watches.is_closed() {
                return Ok(());
            }
            let changed = guard.watch.take_changed();
            if changed.is_empty() {
                continue;
            }
            if crate::auth::authenticate(&self.app.shared.state, &token).is_err() {
                return Err(McpError::invalid_request(
                    "the token that opened this subscription is no longer valid",
                    None,
                ));
            }
            for address in changed {
                let uri = format!("{TASK_PREFIX}{address}");
                if context.sink().notify_resource_updated(uri).await.is_err() {
                    // The client left.
                    return Ok(());
                }
            }
        }
    }
}
