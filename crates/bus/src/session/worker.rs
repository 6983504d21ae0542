//! Worker sessions over the bus: `hello` registers (or resumes) a worker for the
//! connection, `heartbeat` keeps it alive, `bye` ends it; each is a kernel command
//! answered once decided.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use colony_api::bus::{NodeFrame, WorkerAnswer};
use colony_kernel::CommandBody;
use serde_json::Value;

use super::frame::{Frame, FrameError};
use super::Session;
use crate::Conn;

/// Worker commands one connection may have waiting for their decisions. An honest
/// worker waits for each answer (one at a time, a heartbeat every few seconds); a
/// client that sends them without waiting would otherwise fill the node's command
/// queue, which every principal shares, from one connection.
pub const WORKER_OPS_IN_FLIGHT_MAX: usize = 4;

/// One worker command in flight on a connection, until dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn enter(conn: &Arc<Conn>) -> Option<InFlight> {
        conn.worker_ops
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < WORKER_OPS_IN_FLIGHT_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(Arc::clone(conn)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.worker_ops.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session {
    /// Registers a worker session for this connection, or resumes one (`worker`).
    pub(super) fn hello(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let (justification, body) = match frame.worker {
            Some(worker) => (
                frame
                    .justification
                    .clone()
                    .unwrap_or_else(|| format!("worker {worker} is back on the bus")),
                CommandBody::WorkerHeartbeat { worker },
            ),
            None => (
                frame.justification.clone().unwrap_or_else(|| {
                    format!("{} starts a worker session (bus)", self.conn.address)
                }),
                CommandBody::RegisterWorker(Box::new(colony_kernel::workers::NewWorker {
                    capabilities: frame.capabilities.clone().unwrap_or_default(),
                    model: frame.model.clone(),
                    profile: frame.profile.clone(),
                })),
            ),
        };
        self.decide(frame, justification, body, false)
    }

    /// `heartbeat` and `bye`: for the connection's worker, or the one named.
    pub(super) fn worker_op(&mut self, frame: &Frame) -> Result<(), FrameError> {
        let worker = frame.worker.or(self.conn.worker.get()).ok_or_else(|| {
            FrameError::new(
                "invalid",
                "no worker session on this connection: say hello first",
            )
        })?;
        if frame.op != "bye" {
            if let Some(liveness) = &self.bus.liveness {
                self.heard(liveness, frame, worker);
                return Ok(());
            }
        }
        let body = if frame.op == "bye" {
            CommandBody::LeaveWorker { worker }
        } else {
            CommandBody::WorkerHeartbeat { worker }
        };
        let justification = frame.justification.clone().unwrap_or_else(|| {
            if frame.op == "bye" {
                format!("worker {worker} leaves (bus)")
            } else {
                format!("worker {worker} is alive (bus)")
            }
        });
        self.decide(frame, justification, body, frame.op == "bye")
    }

    /// A heartbeat heard in memory (soft liveness): answered at once, nothing logged.
    fn heard(&self, liveness: &crate::liveness::Liveness, frame: &Frame, worker: u64) {
        let id = frame.id.map_or(Value::Null, |id| crate::frame_id(id.get()));
        match liveness.heard(self.conn.principal, worker) {
            Ok(_) if id.is_null() => {}
            Ok(_) => {
                let (heartbeat_ms, lease_ms) = self.bus.session_timings();
                self.conn.push_frame(NodeFrame::Worker(&WorkerAnswer {
                    id: Some(id),
                    worker: Some(worker),
                    status: "active".into(),
                    heartbeat_ms,
                    lease_ms,
                    resumed: false,
                    seq: None,
                }));
            }
            Err(reason) => {
                if matches!(reason, colony_kernel::Reason::WorkerGone { .. }) {
                    self.conn.worker.take();
                }
                let error = FrameError::from_reason(&reason);
                self.conn
                    .push_frame(NodeFrame::Err(&error.refusal(Some(id))));
            }
        }
    }

    /// Submits a worker command for this connection's principal and answers when it
    /// is decided (the session goes on meanwhile).
    fn decide(
        &self,
        frame: &Frame,
        justification: String,
        body: CommandBody,
        leaving: bool,
    ) -> Result<(), FrameError> {
        let Some(in_flight) = InFlight::enter(&self.conn) else {
            self.bus
                .metrics
                .worker_ops_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(FrameError::new(
                "too_many_in_flight",
                format!(
                    "this connection has {WORKER_OPS_IN_FLIGHT_MAX} worker commands waiting for their decisions, the most it may; wait for their answers"
                ),
            )
            .with("max", WORKER_OPS_IN_FLIGHT_MAX));
        };
        let bus = Arc::clone(&self.bus);
        let conn = Arc::clone(&self.conn);
        let id = frame.id.map_or(Value::Null, |id| crate::frame_id(id.get()));
        let resumed = frame.op == "hello" && frame.worker.is_some();
        let op = frame.op.to_string();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let outcome = match bus
                .submitter
                .submit(conn.principal, justification, body)
                .await
            {
                Ok(outcome) => outcome,
                Err(error) => {
                    let refusal = FrameError::new(error.code, error.message).refusal(Some(id));
                    conn.push_frame(NodeFrame::Err(&refusal));
                    return;
                }
            };
            let primary = &outcome.primary;
            if primary.decision == colony_kernel::Decision::Denied {
                if matches!(primary.reason, colony_kernel::Reason::WorkerGone { .. }) {
                    conn.worker.take();
                }
                let refusal = FrameError::from_reason(&primary.reason).refusal(Some(id));
                conn.push_frame(NodeFrame::Err(&refusal));
                return;
            }
            let (worker, status) = match primary.effect {
                colony_kernel::Effect::WorkerRegistered { worker, .. } => (Some(worker), "active"),
                colony_kernel::Effect::WorkerQueued { ticket, .. } => (Some(ticket), "queued"),
                colony_kernel::Effect::WorkerEnded { worker, .. } => (Some(worker), "left"),
                colony_kernel::Effect::WorkerWithdrawn { ticket } => (Some(ticket), "withdrawn"),
                _ => (None, "active"),
            };
            if leaving {
                if let Some(worker) = conn.worker.take() {
                    bus.worker_conns
                        .lock()
                        .expect("worker lock")
                        .remove(&worker);
                }
            } else if let Some(worker) = worker {
                conn.worker.set(worker);
                bus.worker_conns
                    .lock()
                    .expect("worker lock")
                    .insert(worker, conn.id);
            }
            if op == "heartbeat" && id.is_null() {
                return;
            }
            let (heartbeat_ms, lease_ms) = bus.session_timings();
            conn.push_frame(NodeFrame::Worker(&WorkerAnswer {
                id: Some(id),
                worker,
                status: status.into(),
                heartbeat_ms,
                lease_ms,
                resumed,
                seq: Some(outcome.seq),
            }));
        });
        Ok(())
    }
}
