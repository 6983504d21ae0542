//! Proposals and votes: `POST /v1/proposals`, `POST /v1/proposals/{id}/votes`,
//! `GET /v1/proposals[?state=]`, `GET /v1/proposals/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_kernel::governance::{
    Change, Proposal, ProposalState, ProposalTarget, Tally, VoteChoice,
};
use colony_kernel::{CommandBody, Effect, PrincipalKind};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::{check_amount, parse_resource, require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

/// Absent stays `None`; `null` becomes `Some(None)`; a number `Some(Some(n))`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::<u64>::deserialize(deserializer)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDefaultRequest {
    kind: String,
    resource: String,
    #[serde(default, deserialize_with = "present")]
    amount: Option<Option<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// The limit to change (or `quota_default`).
    limit: Option<String>,
    /// New soft value: absent keeps it, `null` makes it unlimited.
    #[serde(default, deserialize_with = "present")]
    soft: Option<Option<u64>>,
    /// New hard value: absent keeps it, `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    hard: Option<Option<u64>>,
    quota_default: Option<QuotaDefaultRequest>,
    justification: Option<String>,
    /// Refuse unless the change only lowers values (an emergency brake).
    #[serde(default)]
    brake: bool,
}

fn change(field: &str, value: Option<Option<u64>>) -> Result<Change, ApiError> {
    Ok(match value {
        None => Change::Keep,
        Some(None) => Change::Unlimited,
        Some(Some(amount)) => Change::Set(check_amount(field, amount)?),
    })
}

pub async fn propose(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ProposeRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let justification = require_justification(request.justification)?;
    let target = match (request.limit, request.quota_default) {
        (Some(limit), None) => {
            let canonical =
                colony_kernel::builtin_limit(&limit).map_or(limit.clone(), |b| b.name.to_string());
            if request.soft.is_none() && request.hard.is_none() {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "give a new `soft`, a new `hard`, or both",
                ));
            }
            ProposalTarget::Limit {
                limit: canonical,
                soft: change("soft", request.soft)?,
                hard: change("hard", request.hard)?,
            }
        }
        (None, Some(quota)) => {
            let kind = PrincipalKind::parse(&quota.kind).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_kind",
                    format!(
                        "kind `{}` is not one of human, ai, artifact, node",
                        quota.kind
                    ),
                )
            })?;
            let resource = parse_resource(&quota.resource)?;
            if quota.amount.is_none() {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "give the new `amount` (`null` for unlimited)",
                ));
            }
            ProposalTarget::QuotaDefault {
                kind,
                resource,
                amount: change("amount", quota.amount)?,
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "name either a `limit` or a `quota_default`",
            ))
        }
    };
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Propose {
                target,
                brake_only: request.brake,
            },
        )
        .await?;
    let id = match &outcome.primary.effect {
        Effect::ProposalOpened { proposal, .. }
        | Effect::LimitChanged { proposal, .. }
        | Effect::QuotaDefaultChanged { proposal, .. } => *proposal,
        other => return Err(ApiError::internal(format!("unexpected effect {other:?}"))),
    };
    let state = app.shared.state.read().expect("state lock");
    let proposal = state
        .proposal(id)
        .ok_or_else(|| ApiError::internal("the proposal vanished"))?;
    let mut body = proposal_json(&state, proposal);
    body["effect"] = serde_json::to_value(&outcome.primary.effect).unwrap_or(Value::Null);
    body["seq"] = json!(outcome.seq);
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    vote: String,
    justification: Option<String>,
}

pub async fn vote(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
    Body(request): Body<VoteRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let choice = VoteChoice::parse(&request.vote).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_vote",
            format!(
                "vote `{}` is not approve, reject, abstain or veto",
                request.vote
            ),
        )
    })?;
    let justification = request
        .justification
        .filter(|j| !j.trim().is_empty())
        .unwrap_or_else(|| format!("{} on proposal {id}", request.vote));
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::Vote {
                proposal: id,
                choice,
            },
        )
        .await?;
    let state = app.shared.state.read().expect("state lock");
    let proposal = state
        .proposal(id)
        .ok_or_else(|| ApiError::internal("the proposal vanished"))?;
    let mut body = proposal_json(&state, proposal);
    body["vote"] = json!(request.vote);
    body["seq"] = json!(outcome.seq);
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    _caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = match &query.state {
        None => None,
        Some(name) => Some(ProposalState::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "state `{name}` is not one of review, applied, rejected, vetoed, rolled_back"
                ),
            )
        })?),
    };
    let state = app.shared.state.read().expect("state lock");
    let proposals: Vec<Value> = state
        .proposals()
        .filter(|p| wanted.is_none_or(|w| p.state == w))
        .map(|p| proposal_json(&state, p))
        .collect();
    Ok(Json(json!({ "proposals": proposals })))
}

pub async fn one(
    State(app): State<AppState>,
    _caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<Value>, ApiError> {
    let state = app.shared.state.read().expect("state lock");
    state
        .proposal(id)
        .map(|p| Json(proposal_json(&state, p)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no proposal {id}"),
            )
            .with("proposal", id)
        })
}

fn time(at_ms: u64) -> String {
    colony_log::audit::format_time(at_ms)
}

/// A proposal as clients see it, with a live tally while in review.
pub(crate) fn proposal_json(state: &colony_kernel::State, proposal: &Proposal) -> Value {
    let tally = proposal.tally.clone().or_else(|| {
        let rule = state.governance_config()?.rule(proposal.kind)?;
        Some(Tally::count(&proposal.votes, rule))
    });
    let votes: Vec<Value> = proposal
        .votes
        .values()
        .map(|vote| {
            json!({
                "voter": vote.address,
                "side": vote.side,
                "vote": vote.choice,
                "justification": vote.justification,
                "at": time(vote.at_ms),
            })
        })
        .collect();
    let mut body = json!({
        "id": proposal.id,
        "state": proposal.state.as_str(),
        "change": proposal.kind.as_str(),
        "target": proposal.target,
        "proposer": proposal.proposer_address,
        "automatic": proposal.automatic,
        "justification": proposal.justification,
        "created_at": time(proposal.created_at_ms),
        "review_ends_at": time(proposal.review_ends_at_ms),
        "votes": votes,
        "tally": tally,
        "outcome": proposal.outcome,
        "decided_at": proposal.decided_at_ms.map(time),
        "monitor_until": proposal.monitor_until_ms.map(time),
        "brake_expires_at": proposal.brake_expires_at_ms.map(time),
        "confirmed_by": proposal.confirmed_by,
    });
    if let ProposalTarget::Limit { limit, .. } = &proposal.target {
        body["limit"] = json!(limit);
    }
    body
}
