//! What the bus publishes itself: kernel decisions on `colony.events.>` and
//! `colony.grants.>`, limit alerts, task offers, and worker admissions; the bus as
//! the pipeline's `DecisionSink`.

use std::sync::Arc;

use colony_kernel::Priority;

use crate::relay::Reach;
use crate::subject::Tokens;
use crate::{Bus, MsgParts};

impl Bus {
    /// Publishes as the system (`0.1`): kernel events and dead letters. Not gated.
    pub fn publish_system(&self, subject: &str, data: &str) {
        let parts = MsgParts {
            subject,
            data,
            priority: Priority::Normal,
            from: "0.1",
            headers: None,
            reply_to: None,
        };
        let Some(tokens) = Tokens::of(subject) else {
            return; // the system's subjects are valid ones
        };
        let routed = self.route_reaching(&Arc::new(parts.to_msg(None)), &tokens, Reach::All);
        self.count(&routed);
        if let Some(stream) = self.streams.capturing(&tokens) {
            let _ = self.streams.append(&stream, &parts, None);
        }
    }

    /// How often a worker session heartbeats, and a claim's lease: what every answer
    /// about a session tells its worker.
    pub(crate) fn session_timings(&self) -> (u64, u64) {
        let state = self.state.read().expect("state lock");
        let config = state.task_config();
        (config.worker_heartbeat_ms, config.lease_ms)
    }

    /// Tells each connection holding a queued `hello` that its session was admitted
    /// (`{"op":"admitted","worker":ID,...}`), once the admission is durable.
    pub fn workers_admitted(&self, workers: &[u64]) {
        let (heartbeat_ms, lease_ms) = self.session_timings();
        for worker in workers {
            let conn_id = self
                .worker_conns
                .lock()
                .expect("worker lock")
                .get(worker)
                .copied();
            let conn = conn_id.and_then(|id| self.conns.get(id));
            if let Some(conn) = conn {
                conn.push_frame(colony_api::bus::NodeFrame::Admitted(
                    &colony_api::bus::Admitted {
                        worker: *worker,
                        status: "active".into(),
                        heartbeat_ms,
                        lease_ms,
                    },
                ));
            }
        }
    }

    /// Offers tasks that became claimable on [`TASK_OFFERS_SUBJECT`]: what a worker
    /// needs to decide whether to claim (`POST /v1/tasks/claim`).
    pub fn publish_offers(&self, addresses: &[colony_kernel::TaskAddress]) {
        let offers: Vec<String> = {
            let state = self.state.read().expect("state lock");
            addresses
                .iter()
                .filter_map(|address| state.task(address))
                .filter(|task| task.status == colony_kernel::tasks::TaskStatus::Pending)
                .map(|task| {
                    let offer = colony_api::bus::TaskOffer {
                        address: task.address.clone(),
                        title: task.title.clone(),
                        capabilities: task.capabilities.clone(),
                        priority: task.priority.as_str().to_string(),
                        effective_priority: state.effective_priority(task),
                        parent: task.parent.clone(),
                        budget_remaining_micro_usd: task
                            .budget
                            .as_ref()
                            .map(|b| b.remaining_micro_usd),
                        attempts: task.attempts.len(),
                        resume_from_checkpoint: task.checkpoint.is_some(),
                    };
                    serde_json::to_string(&offer).expect("an offer always encodes")
                })
                .collect()
        };
        for offer in offers {
            self.publish_system(TASK_OFFERS_SUBJECT, &offer);
        }
    }

    /// Publishes the decisions of one command on `colony.events.decision.<action>`,
    /// and limit alerts on `colony.events.alert.<limit>`.
    pub fn publish_events(
        &self,
        command: &colony_kernel::Command,
        events: &[colony_kernel::Event],
    ) {
        for event in events {
            let subject = format!("colony.events.decision.{}", event.action);
            let alert_limits: Vec<&str> = std::iter::once(&event.reason)
                .chain(event.warnings.iter())
                .filter_map(|reason| match reason {
                    colony_kernel::Reason::SoftLimit { limit, .. }
                    | colony_kernel::Reason::HardLimit { limit, .. } => Some(limit.as_str()),
                    _ => None,
                })
                .collect();
            // A grant's news also goes to `colony.grants.<requested|approved|denied|
            // expired>.<requester>`, where requesters and approvers listen.
            let grant_subject = event
                .action
                .strip_prefix("grant.")
                .filter(|_| event.decision.is_allowed())
                .map(|what| {
                    let what = match what {
                        "request" => "requested",
                        "approve" => "approved",
                        "deny" => "denied",
                        _ => "expired",
                    };
                    format!("{GRANTS_SUBJECT}.{what}.{}", event.subject)
                })
                .filter(|subject| self.has_subscribers(subject));
            let wanted = self.has_subscribers(&subject)
                || grant_subject.is_some()
                || alert_limits
                    .iter()
                    .any(|l| self.has_subscribers(&format!("colony.events.alert.{l}")));
            if !wanted {
                continue;
            }
            let actor = self
                .state
                .read()
                .expect("state lock")
                .principal(command.actor)
                .map(|p| p.address.clone())
                .unwrap_or_default();
            let data = serde_json::to_string(&colony_api::bus::DecisionEvent {
                seq: command.seq,
                at_ms: command.at_ms,
                actor: &actor,
                justification: &command.justification,
                event,
            })
            .expect("an event always encodes");
            self.publish_system(&subject, &data);
            if let Some(grant_subject) = grant_subject {
                self.publish_system(&grant_subject, &data);
            }
            for limit in alert_limits {
                self.publish_system(&format!("colony.events.alert.{limit}"), &data);
            }
        }
    }
}

/// What else hears of tasks that became claimable, once durable: the node's waiting
/// claims (long polls of `POST /v1/tasks/claim`).
pub trait OfferListener: Send + Sync {
    /// Whether anyone listens now (offers cost nothing otherwise).
    fn wants_offers(&self) -> bool;
    /// Tasks (addresses) that became claimable.
    fn offered(&self, tasks: &[colony_kernel::TaskAddress]);
}

impl Bus {
    /// Sets what else hears of offers (once; later calls change nothing).
    pub fn listen_to_offers(&self, listener: Arc<dyn OfferListener>) {
        let _ = self.offer_listener.set(listener);
    }
}

/// Where tasks that became claimable are offered to workers.
pub const TASK_OFFERS_SUBJECT: &str = "colony.tasks.offers";

/// Whether a pattern may match some subject under `colony.events` or
/// `colony.grants` (the decisions the bus publishes).
pub(crate) fn may_match_events(pattern: &str) -> bool {
    ["events", "grants"].into_iter().any(|second| {
        let mut tokens = pattern.split('.');
        for want in ["colony", second] {
            match tokens.next() {
                Some(">") => return true,
                Some("*") => {}
                Some(token) if token == want => {}
                _ => return false,
            }
        }
        tokens.next().is_some()
    })
}

/// Where requesters and approvers hear of grants: `colony.grants.<what>.<requester>`.
pub const GRANTS_SUBJECT: &str = "colony.grants";

/// The bus hears of every durable decision: it publishes them on `colony.events.>`,
/// offers claimable tasks on `colony.tasks.offers`, and tells queued workers they
/// were admitted.
impl colony_pipeline::sequencer::DecisionSink for Bus {
    fn wants_decisions(&self) -> bool {
        self.wants_events()
    }

    fn wants_offers(&self) -> bool {
        self.has_subscribers(TASK_OFFERS_SUBJECT)
            || self.offer_listener.get().is_some_and(|l| l.wants_offers())
    }

    fn offer(&self, tasks: &[colony_kernel::TaskAddress]) {
        if self.has_subscribers(TASK_OFFERS_SUBJECT) {
            self.publish_offers(tasks);
        }
        if let Some(listener) = self.offer_listener.get() {
            listener.offered(tasks);
        }
    }

    fn admitted(&self, workers: &[u64]) {
        self.workers_admitted(workers);
    }

    fn decided(&self, command: &colony_kernel::Command, events: &[colony_kernel::Event]) {
        self.publish_events(command, events);
    }
}
