//! Each principal's allowance at the gateway, in memory: calls in flight at once and
//! tokens per minute (held for calls in flight, counted when they settle).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use colony_kernel::PrincipalId;

use crate::{Gateway, Refusal};

/// Requests in flight and tokens this minute, per principal.
#[derive(Debug, Default)]
pub(crate) struct PrincipalUse {
    in_flight: u64,
    window_start_ms: u64,
    tokens: u64,
    /// Estimates of the calls in flight, counted until they settle.
    held: u64,
}

/// Held while a call is in flight: releases the principal's concurrency slot and
/// its token estimate, recording the actual tokens.
pub struct Admission {
    gateway: Arc<Gateway>,
    principal: PrincipalId,
    estimate: u64,
    actual: AtomicU64,
}

impl Admission {
    pub fn record_tokens(&self, tokens: u64) {
        self.actual.store(tokens, Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut uses = self.gateway.uses.lock().expect("gateway lock");
        if let Some(entry) = uses.get_mut(&self.principal) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.held = entry.held.saturating_sub(self.estimate);
            let actual = self.actual.load(Ordering::Relaxed);
            // A call that settles in the same window counts its actual tokens.
            entry.tokens = entry.tokens.saturating_add(actual);
        }
    }
}

impl Gateway {
    /// Admits a call of `estimate` tokens for `principal`, or says why not.
    pub fn admit(
        self: &Arc<Gateway>,
        principal: PrincipalId,
        estimate: u64,
        now_ms: u64,
    ) -> Result<Admission, Refusal> {
        let mut uses = self.uses.lock().expect("gateway lock");
        let entry = uses.entry(principal).or_default();
        let window_start = now_ms - now_ms % 60_000;
        if entry.window_start_ms != window_start {
            entry.window_start_ms = window_start;
            entry.tokens = 0;
        }
        let max = self.config.concurrent_per_principal;
        if entry.in_flight >= max {
            let mut refusal = Refusal::new(
                429,
                "rate_limit_exceeded",
                "rate_limited",
                format!("{} LLM calls of yours are in flight, the most allowed at once; retry when one ends", entry.in_flight),
            )
            .with("limit", "concurrent_per_principal")
            .with("in_flight", entry.in_flight)
            .with("max", max)
            .with("retry_after", 1);
            refusal.retry_after_secs = Some(1);
            return Err(refusal);
        }
        if let Some(tpm) = self.config.tokens_per_minute_per_principal {
            let used = entry.tokens + entry.held;
            if used + estimate > tpm {
                let retry = (window_start + 60_000 - now_ms).div_ceil(1_000).max(1);
                let mut refusal = Refusal::new(
                    429,
                    "rate_limit_exceeded",
                    "rate_limited",
                    format!(
                        "tokens per minute: {used} used or held this minute, this call may take {estimate}, the limit is {tpm}; retry in {retry} s"
                    ),
                )
                .with("limit", "tokens_per_minute_per_principal")
                .with("used", used)
                .with("requested", estimate)
                .with("max", tpm)
                .with("retry_after", retry);
                refusal.retry_after_secs = Some(retry);
                return Err(refusal);
            }
        }
        entry.in_flight += 1;
        entry.held += estimate;
        Ok(Admission {
            gateway: Arc::clone(self),
            principal,
            estimate,
            actual: AtomicU64::new(0),
        })
    }
}
