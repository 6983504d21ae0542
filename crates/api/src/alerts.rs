//! `GET /v1/alerts` and `GET /v1/alerts/dead-letters`: proximity alerts as recorded,
//! and the deliveries to webhooks that never arrived.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/alerts?after=&limit=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Only alerts with a greater id.
    pub after: Option<u64>,
    /// At most this many (1 to 1000; 100 when absent), the latest.
    pub limit: Option<usize>,
}

/// An alert: a watched figure crossed a threshold (`raise`), or fell back below it
/// past the hysteresis (`clear`). Also the body of a JSON webhook (`alert`) and the
/// data published on `colony.alerts.<figure>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    pub id: u64,
    /// The decision record (`GET /v1/audit?after=<seq - 1>&limit=1`).
    pub seq: u64,
    pub at: String,
    pub at_ms: u64,
    /// `raise` or `clear`.
    pub kind: String,
    /// The limit, or `quota.<resource>`.
    pub figure: String,
    pub limit: Option<String>,
    /// For a quota alert: whose, and of what.
    pub principal: Option<String>,
    pub resource: Option<String>,
    /// `soft` or a percentage like `80%`.
    pub threshold: String,
    pub usage: u64,
    /// The threshold's value.
    pub threshold_value: u64,
    /// The hard value or quota the percentage is of.
    pub of: Option<u64>,
    pub summary: String,
}

/// A threshold standing raised now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RaisedView {
    pub figure: String,
    pub principal: Option<String>,
    pub threshold: String,
}

/// `GET /v1/alerts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    /// Oldest first.
    pub alerts: Vec<AlertView>,
    /// The thresholds standing raised (at most 1 000: limits first, then quotas).
    pub raised: Vec<RaisedView>,
    /// How many stand raised in all.
    pub raised_total: usize,
    /// Webhooks configured.
    pub webhooks: usize,
    /// Dead letters kept now.
    pub dead_letters: usize,
}

/// The body POSTed to a `format = "json"` webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertDelivery {
    pub alert: AlertView,
    /// One line a person reads.
    pub text: String,
    /// The node that sent it.
    pub node: String,
}

/// A delivery that never arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// `alert-<id>` or `report-<until_ms>`.
    pub delivery: String,
    /// The webhook's scheme and host.
    pub webhook: String,
    pub attempts: u32,
    pub error: String,
    pub at: String,
    pub body: String,
}

/// `GET /v1/alerts/dead-letters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

/// The body POSTed to a `format = "json"` webhook for a periodic report
/// (`[reports] every` in alerts.toml).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportDelivery {
    pub report: crate::reports::Summary,
    /// The report as Markdown.
    pub text: String,
    pub node: String,
}
