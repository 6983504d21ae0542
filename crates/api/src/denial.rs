use colony_kernel::Reason;
use serde_json::{Map, Value};

/// What kind of refusal a denial is (the node maps it to an HTTP status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenialClass {
    /// A limit, a quota or a rate: retry later (429).
    TooMany,
    /// Not allowed for this caller (403).
    Forbidden,
    /// Nothing there (404).
    NotFound,
    /// Someone else holds it, or the caller's claim was lost (409).
    Conflict,
    /// The worker session is over (410).
    Gone,
    /// The request itself is wrong (400).
    Invalid,
}

/// A kernel denial, told: its class, its code, a message a person can act on, the
/// reason's fields, and when to retry if the refusal is temporary.
#[derive(Clone, Debug)]
pub struct Denial {
    pub class: DenialClass,
    pub code: String,
    pub message: String,
    pub details: Map<String, Value>,
    pub retry_at_ms: Option<u64>,
}

impl Denial {
    pub fn of(reason: &Reason) -> Denial {
        let (class, retry_at_ms) = match reason {
            Reason::HardLimit { .. }
            | Reason::QueueFull { .. }
            | Reason::TooManyProposals { .. }
            | Reason::QueueShare { .. }
            | Reason::TooManyReservations { .. } => (DenialClass::TooMany, None),
            Reason::BrakeRate { retry_at_ms, .. } => (DenialClass::TooMany, Some(*retry_at_ms)),
            Reason::InsufficientResource { refill_at_ms, .. } => {
                (DenialClass::TooMany, *refill_at_ms)
            }
            Reason::Forbidden { .. } | Reason::NoStanding { .. } | Reason::Quarantined { .. } => {
                (DenialClass::Forbidden, None)
            }
            Reason::NotFound { .. } => (DenialClass::NotFound, None),
            Reason::StaleLease { .. }
            | Reason::NotClaimable { .. }
            | Reason::AttemptTimedOut { .. }
            | Reason::Cancelled { .. } => (DenialClass::Conflict, None),
            Reason::WorkerGone { .. } => (DenialClass::Gone, None),
            _ => (DenialClass::Invalid, None),
        };
        let mut details = match serde_json::to_value(reason) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let code = details
            .remove("code")
            .and_then(|c| c.as_str().map(str::to_string))
            .unwrap_or_default();
        Denial {
            class,
            code,
            message: explain(reason),
            details,
            retry_at_ms,
        }
    }

    /// Whole seconds from `now_ms` until a retry may succeed (at least 1).
    pub fn retry_after_secs(&self, now_ms: u64) -> Option<u64> {
        self.retry_at_ms
            .map(|at_ms| at_ms.saturating_sub(now_ms).div_ceil(1_000).max(1))
    }
}

/// A time as people read it in messages (RFC 3339, milliseconds, UTC).
pub fn format_time(at_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// One sentence (or two) that a person can act on.
pub fn explain(reason: &Reason) -> String {
    match reason {
        Reason::Ok => "allowed".into(),
        Reason::SoftLimit { limit, usage, requested, soft, .. } => format!(
            "{limit} is past its soft limit: {usage} in use, {requested} more requested, soft limit {soft}"
        ),
        Reason::HardLimit { limit, usage, requested, hard, set_by, set_at_ms, set_via } => format!(
            "{limit} is at its hard limit: {usage} in use and {requested} more requested, but the hard limit is {hard}. \
             It was set by {set_by} at {} via {set_via}. To change it, propose a new value through governance \
             (any human or AI with standing may propose; `colony limits` shows every limit).",
            format_time(*set_at_ms)
        ),
        Reason::QueueFull { limit, queue_max } => {
            format!("{limit} is past its soft limit and its admission queue is full ({queue_max} waiting); retry later")
        }
        Reason::InsufficientResource { resource, requested, available, principal, refill_at_ms } => {
            let refill = refill_at_ms
                .map(|at| format!("; it refills at {}", format_time(at)))
                .unwrap_or_default();
            format!("not enough {resource} at {principal}: {requested} requested, {available} available{refill}")
        }
        Reason::Forbidden { message } => message.clone(),
        Reason::NoStanding { actor } => format!("principal {actor} has no standing"),
        Reason::NotFound { what, id } => format!("no {what} {id}"),
        Reason::Invalid { message } => message.clone(),
        Reason::ReservationExpired { .. } => "the reservation expired".into(),
        Reason::LimitAllows { limit, .. } => format!("admitted: {limit} now allows it"),
        Reason::TooManyReservations { max } => {
            format!("you hold {max} open reservations, the most allowed; commit or release some first")
        }
        Reason::ConsensusReached { .. } => "both sides reached their quorum and approval threshold".into(),
        Reason::ConsensusNotReached { .. } => "a side missed its quorum or approval threshold".into(),
        Reason::Vetoed { by } => format!("vetoed by {by}"),
        Reason::BrakeFloor { limit, floor, requested } => format!(
            "a brake cannot take {limit} below its floor of {floor} ({requested} was asked); \
             a lower value is a proposal for a vote"
        ),
        Reason::BrakeRate { max, window_ms, retry_at_ms } => format!(
            "you applied {max} brakes in the last {} minutes, the most allowed; the next is possible at {}",
            window_ms / 60_000,
            format_time(*retry_at_ms)
        ),
        Reason::QueueShare { limit, held, share } => format!(
            "{limit} is past its soft limit and you already wait in its queue {held} times, your fair share of {share} places; retry when one is admitted"
        ),
        Reason::TooManyProposals { max } => format!(
            "you have {max} proposals in review, the most allowed; wait for one to be decided"
        ),
        Reason::BrakeExpired { proposal, ttl_ms, .. } => format!(
            "brake {proposal} was not confirmed by the other side within {} s: the earlier values are back",
            ttl_ms / 1_000
        ),
        Reason::Anomalous { evidence } => format!(
            "quarantined: {} {} in the window starting {}, past {} ({}; its baseline is {:.1} a window); a human member or admin releases it",
            evidence.count,
            evidence.signal.as_str(),
            format_time(evidence.window_start_ms),
            evidence.threshold,
            match evidence.rule {
                colony_kernel::anomaly::EvidenceRule::Ceiling => "the fixed ceiling",
                colony_kernel::anomaly::EvidenceRule::Baseline => "far outside its own baseline",
            },
            evidence.baseline_sixteenths as f64 / colony_kernel::anomaly::BASELINE_SCALE as f64
        ),
        Reason::Quarantined { since_ms, evidence } => format!(
            "you are quarantined since {} ({} {} in a window, past {}): you may only read until a human member or admin releases you",
            format_time(*since_ms),
            evidence.count,
            evidence.signal.as_str(),
            evidence.threshold
        ),
        Reason::BrakeConfirmed { proposal, by } => {
            format!("brake {proposal} was confirmed by {by}: it holds until changed")
        }
        Reason::WorkerGone { worker, state } => format!(
            "worker session {worker} is {state}; register again (its old leases are revoked)"
        ),
        Reason::WorkerDisconnected { worker, disconnected_at_ms, grace_ms, revoked } => format!(
            "worker {worker}'s bus connection dropped at {} without a graceful leave and it did not come back within {grace_ms} ms; {} task(s) went back on the board",
            format_time(*disconnected_at_ms),
            revoked.len()
        ),
        Reason::WorkerSilent { worker, last_heartbeat_ms, timeout_ms, revoked } => format!(
            "worker session {worker} sent no heartbeat since {} (timeout {timeout_ms} ms); {} task(s) went back on the board",
            format_time(*last_heartbeat_ms),
            revoked.len()
        ),
        Reason::NotClaimable { task, status, holder } => format!(
            "{task} is {status}{}; it cannot be claimed now",
            holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default()
        ),
        Reason::StaleLease { task, presented, current, status } => format!(
            "your claim on {task} is no longer valid (token {presented}; the task is {status}{}): its lease expired \
             or it was reassigned. Claim work again.",
            current.map(|c| format!(", held under token {c}")).unwrap_or_default()
        ),
        Reason::AttemptTimedOut { task, attempt, holder, started_at_ms, deadline_ms, timeout_ms, last_renewed_at_ms } => format!(
            "attempt {attempt} of {task} by {holder}, started at {}, ran past its attempt_timeout of {timeout_ms} ms \
             (deadline {}; last heartbeat or checkpoint at {}): it failed as timed out and its lease ended. \
             Stop working on it; claim work again.",
            format_time(*started_at_ms),
            format_time(*deadline_ms),
            format_time(*last_renewed_at_ms)
        ),
        Reason::Cancelled { task, by, at_ms, cancelled } => format!(
            "{task} was cancelled by {by} at {}{}: its lease ended. Stop working on it.",
            format_time(*at_ms),
            if cancelled == task { String::new() } else { format!(" (with {cancelled}, its ancestor)") }
        ),
        Reason::Stable { .. } => "the stability window met every threshold".into(),
        Reason::StabilityDegraded { breaches, .. } => format!("stability degraded: {}", breaches.join("; ")),
    }
}
