//! A worker session: registered (queued past the node's `active_workers` soft limit
//! until a place frees up), kept alive by heartbeats while it works, and left at the
//! end. [`Session::run`] is the worker loop (`worker.rs`) on it.

use std::future::Future;
use std::time::Duration;

use colony_api::workers::{RegisterAnswer, RegisterRequest};

use crate::worker::{Outcome, Stop, Work, WorkerOptions, WorkerReport};
use crate::{Client, Error};

/// How often a queued session asks whether it was admitted.
const QUEUED_LOOK_EVERY: Duration = Duration::from_secs(2);
/// A session's heartbeat and lease until the node says otherwise (a queued session
/// learns them only when admitted).
const HEARTBEAT_MS_DEFAULT: u64 = 2_000;
const LEASE_MS_DEFAULT: u64 = 30_000;

/// A registered worker session.
#[derive(Debug)]
pub struct Session {
    client: Client,
    worker: u64,
    heartbeat_ms: u64,
    lease_ms: u64,
    /// Its place in the queue when it was registered queued, until admitted.
    queued: Option<usize>,
}

impl Session {
    /// Registers a session with `options`' capabilities and model: active at once,
    /// or queued ([`Session::queued`]) until [`Session::admitted`].
    pub async fn register(client: &Client, options: &WorkerOptions) -> Result<Session, Error> {
        let registration = client
            .register_worker(&RegisterRequest {
                capabilities: options.capabilities.clone(),
                model: options.model.clone(),
                profile: options.profile.clone(),
                justification: Some(format!(
                    "a colony-client worker (process {}) starts",
                    std::process::id()
                )),
            })
            .await?;
        Ok(match registration {
            RegisterAnswer::Registered(session) => Session {
                client: client.clone(),
                worker: session.worker,
                heartbeat_ms: session.heartbeat_ms,
                lease_ms: session.lease_ms,
                queued: None,
            },
            RegisterAnswer::Queued(queued) => Session {
                client: client.clone(),
                worker: queued.worker,
                heartbeat_ms: HEARTBEAT_MS_DEFAULT,
                lease_ms: LEASE_MS_DEFAULT,
                queued: Some(queued.position),
            },
        })
    }

    /// The session's id (`/v1/workers/{id}`).
    pub fn worker(&self) -> u64 {
        self.worker
    }

    /// Its place in the queue, while it waits for a place.
    pub fn queued(&self) -> Option<usize> {
        self.queued
    }

    /// Waits until a queued session is admitted (at once for an active one): true,
    /// or false when `stop` came first.
    pub async fn admitted(&mut self, stop: &Stop) -> Result<bool, Error> {
        while self.queued.is_some() {
            tokio::select! {
                () = tokio::time::sleep(QUEUED_LOOK_EVERY) => {}
                () = stop.wait() => return Ok(false),
            }
            // Admitted when a place frees up: the session then answers heartbeats.
            match self.client.worker_heartbeat(self.worker).await {
                Ok(_) => self.queued = None,
                Err(error) if error.status() == Some(409) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Works tasks until `options.max_tasks`, `stop`, or the session is lost (the
    /// node declared it gone): admitted first when queued, heartbeats meanwhile, and
    /// the session left at the end unless it was lost.
    pub async fn run<F, Fut>(
        mut self,
        options: &WorkerOptions,
        stop: &Stop,
        mut handler: F,
    ) -> Result<WorkerReport, Error>
    where
        F: FnMut(Work) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let mut report = WorkerReport {
            worker: self.worker,
            ..WorkerReport::default()
        };
        if !self.admitted(stop).await? {
            // Stopped while waiting for a place: out of the queue, so that the node
            // never admits a session nobody runs (best effort, as the leave at the
            // end: stopping does not fail on it).
            let _ = self.client.leave(self.worker).await;
            return Ok(report);
        }
        let lost_session = Stop::default();
        let beating = {
            let (client, lost_session) = (self.client.clone(), lost_session.clone());
            let (worker, every) = (
                self.worker,
                Duration::from_millis(self.heartbeat_ms.max(100)),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(error) = client.worker_heartbeat(worker).await {
                        if error.is_gone() {
                            lost_session.stop();
                            return;
                        }
                    }
                }
            })
        };
        let turn = crate::worker::Turn {
            client: &self.client,
            options,
            stop,
            lost_session: &lost_session,
            worker: self.worker,
            lease_ms: self.lease_ms,
        };
        let result = crate::worker::work(&turn, &mut report, &mut handler).await;
        beating.abort();
        report.session_lost = lost_session.stopped();
        if !report.session_lost {
            let _ = self.client.leave(self.worker).await;
        }
        result.map(|()| report)
    }
}
