//! Proximity alerts.
//!
//! Owns `alerts.toml` ([`AlertsConfig`]), the pure decision of which thresholds a
//! figure crosses with hysteresis ([`crossings`]), and the delivery of alerts to
//! webhooks ([`Webhooks`]: HMAC-SHA256 signed, retried with backoff, dead letters).
//!
//! It never decides anything itself and never touches the kernel's state: the node's
//! watcher reads the figures, asks [`crossings`], submits each crossing to the kernel
//! (where it becomes a decision in the log), and hands what the kernel recorded to
//! [`Webhooks::send`], which never waits: each webhook has its own bounded queue and
//! task, so a slow or dead receiver slows nothing else.

mod config;
mod crossing;
mod webhooks;

pub use config::{load, parse, AlertsConfig, Format, QuotaRules, Rules, WebhookConfig};
pub use crossing::{crossings, Cooldown, Figure, COOLDOWN_ENTRIES_MAX};
pub use webhooks::{
    sign, DeadLetter, Delivery, Webhooks, DEAD_LETTERS_KEPT, DEAD_LETTER_FILE_BYTES_MAX,
    SIGNATURE_HEADER, WEBHOOK_QUEUE_MAX,
};
