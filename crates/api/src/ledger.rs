//! `/v1/ledger/...`: reservations, commits, releases, grants to children, and the
//! caller's balances.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Explained;

/// `POST /v1/ledger/reserve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    #[schema(maximum = 9007199254740991.0)]
    pub amount: u64,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
    /// How long the reservation lives before it is released, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `201`: the amount is held for the caller until committed, released or expired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reserved {
    pub reservation: u64,
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    pub amount: u64,
    pub unit: String,
    pub expires_at: String,
    pub expires_at_ms: u64,
    pub warnings: Vec<Explained>,
    pub seq: u64,
}

/// `POST /v1/ledger/commit`: the actual use of a reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub reservation: u64,
    #[schema(maximum = 9007199254740991.0)]
    pub actual: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// What a commit charged: `charged` + `refunded` = `reserved`, `shortfall` what the
/// actual use exceeded the balance by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Committed {
    pub reservation: u64,
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    pub reserved: u64,
    pub actual: u64,
    pub charged: u64,
    pub refunded: u64,
    pub shortfall: u64,
    pub seq: u64,
}

/// `POST /v1/ledger/release`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub reservation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// The reservation given back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Released {
    pub released: u64,
    #[schema(value_type = Object)]
    pub effect: colony_kernel::Effect,
    pub seq: u64,
}

/// `POST /v1/ledger/grant`: part of the caller's quota to a child principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaGrantRequest {
    /// Address of the child principal.
    pub to: String,
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    #[schema(maximum = 9007199254740991.0)]
    pub amount: u64,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// What a grant did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Granted {
    #[schema(value_type = Object)]
    pub granted: colony_kernel::Effect,
    pub seq: u64,
}

/// `POST /v1/ledger/free`: usage of a stock resource given back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreeRequest {
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    #[schema(maximum = 9007199254740991.0)]
    pub amount: u64,
    /// Why (required; recorded with the decision).
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    pub justification: Option<String>,
}

/// What freeing did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Freed {
    #[schema(value_type = Object)]
    pub freed: colony_kernel::Effect,
    pub seq: u64,
}

/// `GET /v1/ledger/me`: the caller's balances and open reservations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LedgerView {
    pub principal: String,
    /// By resource name.
    pub balances: BTreeMap<String, BalanceView>,
    pub reservations: Vec<ReservationView>,
}

/// One resource's balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceView {
    /// `flow` (refills every window) or `stock`.
    pub kind: String,
    pub unit: String,
    /// `null`: unlimited.
    pub quota: Option<u64>,
    pub used: u64,
    pub reserved: u64,
    pub available: Option<u64>,
    pub shortfall: u64,
    pub window_ms: Option<u64>,
    pub refill_at: Option<String>,
}

/// An open reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    pub reservation: u64,
    #[schema(schema_with = crate::schema::resource)]
    pub resource: String,
    pub amount: u64,
    /// `reserved`, or `held` (an LLM call's actual use waiting for its task charge).
    pub state: String,
    pub held: Option<u64>,
    pub expires_at: Option<String>,
}
