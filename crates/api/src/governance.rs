//! `/v1/proposals...`: proposals (brakes included) and votes.

use colony_kernel::governance::{ProposalTarget, Side, Tally, VoteChoice};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Absent stays `None`; `null` becomes `Some(None)`; a number `Some(Some(n))`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::<u64>::deserialize(deserializer)?))
}

/// A new default quota for a kind of principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaDefaultRequest {
    /// `human`, `ai`, `artifact`, `node`.
    pub kind: String,
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    /// The new amount; `null` for unlimited.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub amount: Option<Option<u64>>,
}

/// A new retention rule for finished tasks (`retention.toml`'s `[tasks]`); what is
/// absent keeps its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    /// Most tasks of finished trees kept in the live state (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_finished: Option<u64>,
    /// How long a finished tree stays, as `90s`, `12h`, `7d` (at least `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_finished_for: Option<String>,
}

/// `POST /v1/proposals`: name either a `limit` (with a new `soft`, `hard` or both), a
/// `quota_default`, or a `retention` rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// The limit to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// New soft value: absent keeps it, `null` makes it unlimited.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub soft: Option<Option<u64>>,
    /// New hard value: absent keeps it, `null` removes the limit.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub hard: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_default: Option<QuotaDefaultRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionRequest>,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
    /// Refuse unless the change only lowers values (an emergency brake, in force at
    /// once).
    #[serde(default)]
    pub brake: bool,
}

/// `POST /v1/proposals/{id}/votes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// `approve`, `reject`, `abstain` or `veto`.
    pub vote: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// `GET /v1/proposals?state=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `review`, `applied`, `rejected`, `vetoed`, `rolled_back`, `expired`.
    pub state: Option<String>,
}

/// `GET /v1/proposals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProposalList {
    pub proposals: Vec<ProposalView>,
}

/// A proposal as clients see it, with a live tally while in review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProposalView {
    pub id: u64,
    /// `review`, `applied`, `rejected`, `vetoed`, `rolled_back`, `expired`.
    pub state: String,
    /// The kind of change (`raise`, `brake`, `remove`, `quota_default`...), which sets the rule that decides it.
    pub change: String,
    /// What it changes: `{"limit": {...}}` or `{"quota_default": {...}}`.
    #[schema(value_type = Object)]
    pub target: ProposalTarget,
    pub proposer: String,
    /// Made by the system itself (progressive relaxation).
    pub automatic: bool,
    pub justification: String,
    pub created_at: String,
    pub review_ends_at: String,
    pub votes: Vec<VoteView>,
    #[schema(value_type = Option<Object>)]
    pub tally: Option<Tally>,
    /// Why it ended as it did.
    pub outcome: Option<String>,
    pub decided_at: Option<String>,
    pub monitor_until: Option<String>,
    /// A brake not yet confirmed by the other side: when its values go back.
    pub brake_expires_at: Option<String>,
    pub confirmed_by: Option<String>,
    /// The limit it changes (limit proposals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// What proposing did (`POST /v1/proposals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub effect: Option<colony_kernel::Effect>,
    /// The vote just cast (`POST .../votes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<String>,
    /// The sequence number of the decision (after an action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// One vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VoteView {
    pub voter: String,
    /// The root of the voter's lineage (the voter itself, or the principal an admin
    /// created that spawned it): a lineage has one vote, on its root's side.
    pub lineage: String,
    /// `human` or `ai`: the side of the lineage's root.
    #[schema(value_type = String)]
    pub side: Side,
    /// `approve`, `reject`, `abstain`, `veto`.
    #[schema(value_type = String)]
    pub vote: VoteChoice,
    pub justification: String,
    pub at: String,
}
