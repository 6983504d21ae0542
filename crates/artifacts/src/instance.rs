//! What a running artifact's store holds ([`HostState`]): who it is, its turn's
//! host-call allowance, its memory holds and key-value store, its log; and the
//! kernel as the host calls reach it ([`Kernel`]).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use colony_kernel::{
    CommandBody, Effect, Event, PrincipalId, Reason, ReservationId, Resource, State,
};
use colony_pipeline::sequencer::Submitter;
use serde::Deserialize;

use crate::config::RuntimeConfig;
use crate::host::{code, HostError};
use crate::status::{LogLine, Status};

/// Who an artifact is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: PrincipalId,
    pub address: String,
}

/// A boxed future, as [`Services`] answers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the node lends artifacts besides the kernel: the bus and the LLM gateway.
/// Each call is made as the artifact, with the authorization it would have over
/// HTTP or WebSocket.
pub trait Services: Send + Sync + 'static {
    /// Publishes `data` (JSON) on `subject`, gated like any publish.
    fn publish(&self, me: &Identity, subject: &str, data: &str) -> Result<(), HostError>;
    /// Subscribes the artifact's inbox to `pattern`.
    fn subscribe(&self, me: &Identity, pattern: &str) -> Result<(), HostError>;
    /// The next message in the inbox, as JSON (`subject`, `data`, `from`).
    fn receive(&self, me: &Identity) -> Option<String>;
    /// Waits until the inbox has a message (or forever when there is no inbox).
    fn wait_message(&self, me: &Identity) -> BoxFuture<()>;
    /// An OpenAI chat request through the gateway, reserved and settled on the
    /// artifact's `llm_budget_usd`; the answer's JSON.
    fn chat(&self, me: &Identity, request: String) -> BoxFuture<Result<String, HostError>>;
    /// The artifact stopped: its subscriptions go.
    fn end(&self, me: &Identity);
}

/// The kernel as artifacts reach it: commands through the pipeline, reads of the
/// state, and a way to wait on a future from a turn's thread.
pub struct Kernel {
    pub submitter: Submitter,
    pub state: Arc<RwLock<State>>,
    pub handle: tokio::runtime::Handle,
}

impl Kernel {
    /// The time of the last decision.
    pub fn now_ms(&self) -> u64 {
        self.state.read().expect("state lock").now_ms
    }

    /// What `principal`'s own balance of `resource` has left now (flow windows
    /// rolled to the clock).
    pub fn available(&self, principal: PrincipalId, resource: Resource) -> u64 {
        let state = self.state.read().expect("state lock");
        let now_ms = colony_pipeline::sequencer::now_ms().max(state.now_ms);
        state
            .balances_at(principal, now_ms)
            .into_iter()
            .find(|(r, _)| *r == resource)
            .map_or(0, |(_, balance)| balance.available())
    }

    /// Waits for `future` on a turn's (blocking) thread.
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.handle.block_on(future)
    }

    /// Submits a command as `actor` and waits for its decision.
    pub async fn decide(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Event, HostError> {
        self.submitter
            .submit_decided(actor, justification, body)
            .await
            .map(|outcome| outcome.primary)
            .map_err(|error| HostError::new(code::UNAVAILABLE, error.message))
    }

    /// Submits a command that carries money or state (a commit, a release, a run
    /// stopped) and sends it again until decided (`colony_pipeline::outbox`): a full
    /// queue never leaves a charge unmade or a hold unreleased. The outbox says
    /// loudly why when it gives up (the node stopping).
    pub async fn decide_until_decided(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Option<Event> {
        self.submitter
            .submit_until_decided(
                actor,
                justification,
                body,
                colony_pipeline::Answered::WhenDecided,
            )
            .await
            .ok()
            .map(|outcome| outcome.primary)
    }

    /// Like [`Kernel::decide`], from a turn's thread; a denial is an error.
    pub fn decide_now(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Event, HostError> {
        let event = self.block_on(self.decide(actor, justification, body))?;
        if event.decision.is_allowed() {
            Ok(event)
        } else {
            Err(denied(&event.reason))
        }
    }
}

/// A denial as a host error.
pub fn denied(reason: &Reason) -> HostError {
    let code = match reason {
        Reason::Forbidden { .. } => code::FORBIDDEN,
        Reason::Invalid { .. } | Reason::NotFound { .. } => code::INVALID,
        _ => code::DENIED,
    };
    let denial = colony_api::Denial::of(reason);
    HostError::new(code, format!("{}: {}", reason.code(), denial.message))
}

/// Reserves `amount` of `resource` and commits it at once (a held gauge, or spent
/// stock): what the artifact now holds or has stored.
pub fn take(
    kernel: &Kernel,
    me: &Identity,
    resource: Resource,
    amount: u64,
    why: &str,
) -> Result<ReservationId, HostError> {
    let reserved = kernel.decide_now(
        me.principal,
        why.to_string(),
        CommandBody::Reserve {
            resource,
            amount,
            ttl_ms: None,
        },
    )?;
    let Effect::Reserved { reservation, .. } = reserved.effect else {
        return Err(HostError::new(
            code::UNAVAILABLE,
            "the reservation said nothing",
        ));
    };
    kernel.decide_now(
        me.principal,
        why.to_string(),
        CommandBody::Commit {
            reservation,
            actual: amount,
        },
    )?;
    Ok(reservation)
}

/// Memory holds past this many are merged into one.
const MEMORY_HOLDS_MAX: usize = 8;
/// Disk is taken and given back in steps of this many bytes.
const DISK_STEP_BYTES: u64 = 4_096;

/// What one artifact's wasmtime store holds.
pub struct HostState {
    pub(crate) me: Identity,
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) services: Arc<dyn Services>,
    pub(crate) status: Arc<Mutex<Status>>,
    /// What the last host call answered, for `result`.
    pub(crate) result: Vec<u8>,
    /// Host calls made this turn, and the `io_ops` reservation covering them.
    pub(crate) host_calls: u64,
    pub(crate) io_reservation: Option<ReservationId>,
    /// Set when a quota stopped the artifact mid-turn (memory).
    pub(crate) exhausted: Option<Reason>,
    /// Linear memory held through the kernel, and the holds.
    pub(crate) memory_held: u64,
    pub(crate) memory_holds: Vec<ReservationId>,
    /// The key-value store, its size, and the disk taken for it.
    pub(crate) kv: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) kv_bytes: u64,
    pub(crate) disk_taken: u64,
    pub(crate) kv_dirty: bool,
    pub(crate) subscriptions: usize,
}

impl HostState {
    pub(crate) fn new(
        me: Identity,
        config: Arc<RuntimeConfig>,
        kernel: Arc<Kernel>,
        services: Arc<dyn Services>,
        status: Arc<Mutex<Status>>,
        kv: BTreeMap<Vec<u8>, Vec<u8>>,
        disk_taken: u64,
    ) -> HostState {
        let kv_bytes = kv.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        HostState {
            me,
            config,
            kernel,
            services,
            status,
            result: Vec::new(),
            host_calls: 0,
            io_reservation: None,
            exhausted: None,
            memory_held: 0,
            memory_holds: Vec::new(),
            kv,
            kv_bytes,
            disk_taken,
            kv_dirty: false,
            subscriptions: 0,
        }
    }

    /// One line in the artifact's log, cut to `log_line_bytes_max`.
    pub(crate) fn log(&self, text: &str) {
        let mut line = text.trim_end().to_string();
        let max = self.config.log_line_bytes_max;
        if line.len() > max {
            let mut cut = max;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let at_ms = self.kernel.now_ms();
        let mut status = self.status.lock().expect("status lock");
        let logs: &mut VecDeque<LogLine> = &mut status.logs;
        if logs.len() >= self.config.log_lines_max {
            logs.pop_front();
        }
        status.log_seq += 1;
        let seq = status.log_seq;
        status.logs.push_back(LogLine {
            seq,
            at_ms,
            text: line,
        });
    }

    /// Counts one host call against the turn's allowance, reserving the allowance
    /// as `io_ops` at the turn's first call.
    pub(crate) fn charge_host_call(&mut self) -> Result<(), HostError> {
        let allowance = self.config.host_calls_per_turn;
        if self.host_calls >= allowance {
            return Err(HostError::new(
                code::TURN_SPENT,
                format!("this turn's {allowance} host calls are used: return from run and go on next turn"),
            ));
        }
        if self.io_reservation.is_none() {
            let event = self.kernel.decide_now(
                self.me.principal,
                format!("artifact {} makes host calls", self.me.address),
                CommandBody::Reserve {
                    resource: Resource::IoOps,
                    amount: allowance,
                    ttl_ms: None,
                },
            )?;
            if let Effect::Reserved { reservation, .. } = event.effect {
                self.io_reservation = Some(reservation);
            }
        }
        self.host_calls += 1;
        Ok(())
    }

    /// Grows the linear memory's hold by `delta` bytes through the kernel.
    pub(crate) fn hold_memory(&mut self, delta: u64) -> Result<(), Reason> {
        let why = format!("artifact {} grows its memory", self.me.address);
        if self.memory_holds.len() >= MEMORY_HOLDS_MAX {
            // One hold for all: release them, then hold the total.
            for hold in std::mem::take(&mut self.memory_holds) {
                self.kernel.block_on(self.kernel.decide_until_decided(
                    self.me.principal,
                    why.clone(),
                    CommandBody::Release { reservation: hold },
                ));
            }
            let total = self.memory_held;
            self.memory_held = 0;
            let hold = take(&self.kernel, &self.me, Resource::MemoryBytes, total, &why)
                .map_err(|_| self.memory_reason(total))?;
            self.memory_holds.push(hold);
            self.memory_held = total;
        }
        match take(&self.kernel, &self.me, Resource::MemoryBytes, delta, &why) {
            Ok(hold) => {
                self.memory_holds.push(hold);
                self.memory_held += delta;
                Ok(())
            }
            Err(_) => Err(self.memory_reason(delta)),
        }
    }

    /// Why memory was refused: the kernel's own reason, read back from the state.
    fn memory_reason(&self, wanted: u64) -> Reason {
        let available = self
            .kernel
            .available(self.me.principal, Resource::MemoryBytes);
        Reason::InsufficientResource {
            resource: Resource::MemoryBytes,
            requested: wanted,
            available,
            principal: self.me.address.clone(),
            refill_at_ms: None,
        }
    }

    /// Gives every memory hold back (the instance is going away).
    pub(crate) fn release_memory(&mut self) {
        for hold in std::mem::take(&mut self.memory_holds) {
            self.kernel.block_on(self.kernel.decide_until_decided(
                self.me.principal,
                format!(
                    "artifact {} stopped: its memory is given back",
                    self.me.address
                ),
                CommandBody::Release { reservation: hold },
            ));
        }
        self.memory_held = 0;
    }

    pub(crate) fn kv_put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), HostError> {
        if key.is_empty() {
            return Err(HostError::invalid("a key is at least one byte"));
        }
        let old = self.kv.get(&key).map(|v| (key.len() + v.len()) as u64);
        if old.is_none() && self.kv.len() >= self.config.kv_keys_max {
            return Err(HostError::invalid(format!(
                "the store holds at most {} keys",
                self.config.kv_keys_max
            )));
        }
        let new_bytes = self.kv_bytes - old.unwrap_or(0) + (key.len() + value.len()) as u64;
        if new_bytes > self.disk_taken {
            let step = (new_bytes - self.disk_taken).next_multiple_of(DISK_STEP_BYTES);
            let why = format!("artifact {} stores {} bytes", self.me.address, new_bytes);
            take(&self.kernel, &self.me, Resource::DiskBytes, step, &why)?;
            self.disk_taken += step;
        }
        self.kv.insert(key, value);
        self.kv_bytes = new_bytes;
        self.kv_dirty = true;
        Ok(())
    }

    pub(crate) fn kv_delete(&mut self, key: &[u8]) -> Result<(), HostError> {
        let Some(value) = self.kv.remove(key) else {
            return Err(HostError::new(code::NONE, "no such key"));
        };
        self.kv_bytes -= (key.len() + value.len()) as u64;
        self.kv_dirty = true;
        let spare = self
            .disk_taken
            .saturating_sub(self.kv_bytes.next_multiple_of(DISK_STEP_BYTES));
        if spare >= 2 * DISK_STEP_BYTES {
            let event = self.kernel.decide_now(
                self.me.principal,
                format!("artifact {} deleted stored data", self.me.address),
                CommandBody::Free {
                    resource: Resource::DiskBytes,
                    amount: spare,
                },
            );
            if event.is_ok() {
                self.disk_taken -= spare;
            }
        }
        Ok(())
    }

    pub(crate) fn subscribe(&mut self, pattern: &str) -> Result<(), HostError> {
        if self.subscriptions >= self.config.subscriptions_max {
            return Err(HostError::invalid(format!(
                "an artifact holds at most {} subscriptions",
                self.config.subscriptions_max
            )));
        }
        self.services.subscribe(&self.me, pattern)?;
        self.subscriptions += 1;
        Ok(())
    }

    pub(crate) fn post_task(&self, request: &str) -> Result<String, HostError> {
        let new: PostRequest = parse(request)?;
        let task = colony_kernel::tasks::NewTask {
            title: new.title,
            description: new.description,
            priority: new.priority.unwrap_or_default(),
            capabilities: new.capabilities,
            depends_on: new.depends_on,
            budget_micro_usd: new.budget_micro_usd,
            max_attempts: new.max_attempts,
            attempt_timeout_ms: None,
        };
        let event = self.kernel.decide_now(
            self.me.principal,
            new.justification
                .unwrap_or_else(|| format!("artifact {} posts a task", self.me.address)),
            CommandBody::PostTask(Box::new(task)),
        )?;
        Ok(event.subject)
    }

    pub(crate) fn claim_task(&self, request: &str) -> Result<String, HostError> {
        let claim: ClaimRequest = parse(request)?;
        let event = self.kernel.decide_now(
            self.me.principal,
            format!("artifact {} claims a task", self.me.address),
            CommandBody::ClaimTask {
                capabilities: claim.capabilities,
                lease_ms: claim.lease_ms,
                worker: None,
            },
        )?;
        let Effect::TaskClaimed {
            address,
            token,
            expires_at_ms,
        } = event.effect
        else {
            return Err(HostError::new(code::NONE, "no task to claim"));
        };
        let state = self.kernel.state.read().expect("state lock");
        let task = state.task(&address);
        Ok(serde_json::json!({
            "address": address,
            "token": token,
            "expires_at_ms": expires_at_ms,
            "title": task.map(|t| t.title.as_str()),
            "description": task.map(|t| t.description.as_str()),
            "capabilities": task.map(|t| &t.capabilities),
        })
        .to_string())
    }

    pub(crate) fn complete_task(&self, request: &str) -> Result<(), HostError> {
        let done: CompleteRequest = parse(request)?;
        self.kernel.decide_now(
            self.me.principal,
            format!("artifact {} completes {}", self.me.address, done.address),
            CommandBody::UpdateTask {
                address: done.address,
                token: done.token,
                update: colony_kernel::TaskUpdate::Complete(done.result),
            },
        )?;
        Ok(())
    }
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, HostError> {
    serde_json::from_str(text).map_err(|e| HostError::invalid(format!("bad request: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostRequest {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    priority: Option<colony_kernel::Priority>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    budget_micro_usd: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    justification: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    lease_ms: Option<u64>,
}

/// What `task_claim` answered, with a `result` added; other fields are ignored.
#[derive(Deserialize)]
struct CompleteRequest {
    address: colony_kernel::TaskAddress,
    token: u64,
    #[serde(default)]
    result: String,
}

/// Linear memory is held through the kernel as it grows; a growth the artifact's
/// `memory_bytes` cannot cover stops it.
impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired <= self.memory_held {
            return Ok(true);
        }
        match self.hold_memory(desired - self.memory_held) {
            Ok(()) => Ok(true),
            Err(reason) => {
                let message = denied(&reason).message;
                self.exhausted = Some(reason);
                Err(wasmtime::Error::msg(message))
            }
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000)
    }
}
