//! Proposals and votes: `POST /v1/proposals`, `POST /v1/proposals/{id}/votes`,
//! `GET /v1/proposals[?state=]`, `GET /v1/proposals/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use colony_api::governance::{
    ListQuery, ProposalList, ProposalView, ProposeRequest, VoteRequest, VoteView,
};
use colony_api::ErrorBody;
use colony_kernel::governance::{
    Change, Proposal, ProposalState, ProposalTarget, Tally, VoteChoice,
};
use colony_kernel::{CommandBody, Effect, PrincipalKind};

use super::{check_amount, parse_resource, require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

fn change(field: &str, value: Option<Option<u64>>) -> Result<Change, ApiError> {
    Ok(match value {
        None => Change::Keep,
        Some(None) => Change::Unlimited,
        Some(Some(amount)) => Change::Set(check_amount(field, amount)?),
    })
}

/// The retention rule a proposal asks for: the one in force with what it names
/// changed.
fn retention_rule(
    app: &AppState,
    request: colony_api::governance::RetentionRequest,
) -> Result<colony_kernel::retention::RetentionConfig, ApiError> {
    if request.keep_finished.is_none() && request.keep_finished_for.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "give a new `keep_finished`, a new `keep_finished_for`, or both",
        ));
    }
    let mut rule = app
        .shared
        .state
        .read()
        .expect("state lock")
        .retention()
        .clone();
    if let Some(keep) = request.keep_finished {
        rule.keep_finished = keep;
    }
    if let Some(text) = &request.keep_finished_for {
        rule.keep_finished_for_ms = crate::genesis::parse_duration_ms(text).map_err(|message| {
            ApiError::bad_request("invalid_body", format!("keep_finished_for: {message}"))
                .with("field", "keep_finished_for")
        })?;
    }
    Ok(rule)
}

/// Proposes a change of a limit, a quota default or the retention rule; a `brake`
/// (lowering only) is in force at once.
#[utoipa::path(post, path = "/v1/proposals", tag = "governance", request_body = ProposeRequest,
    responses((status = 201, body = ProposalView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn propose(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<ProposeRequest>,
) -> Result<(StatusCode, Json<ProposalView>), ApiError> {
    let justification = require_justification(request.justification)?;
    let target = match (request.limit, request.quota_default, request.retention) {
        (Some(limit), None, None) => {
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
        (None, Some(quota), None) => {
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
        (None, None, Some(retention)) => {
            ProposalTarget::Retention(retention_rule(&app, retention)?)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "name one of a `limit`, a `quota_default` or a `retention` rule",
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
        | Effect::QuotaDefaultChanged { proposal, .. }
        | Effect::RetentionChanged { proposal, .. } => *proposal,
        other => return Err(ApiError::internal(format!("unexpected effect {other:?}"))),
    };
    let state = app.shared.state.read().expect("state lock");
    let proposal = state
        .proposal(id)
        .ok_or_else(|| ApiError::internal("the proposal vanished"))?;
    let mut body = proposal_view(&state, proposal);
    body.effect = Some(outcome.primary.effect.clone());
    body.seq = Some(outcome.seq);
    Ok((StatusCode::CREATED, Json(body)))
}

/// Votes on a proposal in review (one vote per principal; a later vote replaces it).
#[utoipa::path(post, path = "/v1/proposals/{id}/votes", tag = "governance", params(("id" = u64, Path)), request_body = VoteRequest,
    responses((status = 201, body = ProposalView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn vote(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
    Body(request): Body<VoteRequest>,
) -> Result<(StatusCode, Json<ProposalView>), ApiError> {
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
    let mut body = proposal_view(&state, proposal);
    body.vote = Some(request.vote);
    body.seq = Some(outcome.seq);
    Ok((StatusCode::CREATED, Json(body)))
}

/// Proposals, oldest first (`?state=review` for those open).
#[utoipa::path(get, path = "/v1/proposals", tag = "governance", params(("state" = Option<String>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = ProposalList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<ProposalList>, ApiError> {
    app.check_read(&caller, "proposals", app.shared.read.proposals)?;
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
    let proposals = state
        .proposals()
        .filter(|p| wanted.is_none_or(|w| p.state == w))
        .map(|p| proposal_view(&state, p))
        .collect();
    Ok(Json(ProposalList { proposals }))
}

/// One proposal, with its votes and tally.
#[utoipa::path(get, path = "/v1/proposals/{id}", tag = "governance", params(("id" = u64, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = ProposalView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment<u64>,
) -> Result<Json<ProposalView>, ApiError> {
    app.check_read(&caller, "proposals", app.shared.read.proposals)?;
    let state = app.shared.state.read().expect("state lock");
    state
        .proposal(id)
        .map(|p| Json(proposal_view(&state, p)))
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
    colony_api::format_time(at_ms)
}

/// A proposal as clients see it, with a live tally while in review.
pub(crate) fn proposal_view(state: &colony_kernel::State, proposal: &Proposal) -> ProposalView {
    let tally = proposal.tally.clone().or_else(|| {
        let rule = state.governance_config().rule(proposal.kind)?;
        Some(Tally::count(&proposal.votes, rule))
    });
    let votes = proposal
        .votes
        .values()
        .map(|vote| VoteView {
            voter: vote.address.clone(),
            lineage: vote.lineage.clone(),
            side: vote.side,
            vote: vote.choice,
            justification: vote.justification.clone(),
            at: time(vote.at_ms),
        })
        .collect();
    ProposalView {
        id: proposal.id,
        state: proposal.state.as_str().to_string(),
        change: proposal.kind.as_str().to_string(),
        target: proposal.target.clone(),
        proposer: proposal.proposer_address.clone(),
        automatic: proposal.automatic,
        justification: proposal.justification.clone(),
        created_at: time(proposal.created_at_ms),
        review_ends_at: time(proposal.review_ends_at_ms),
        votes,
        tally,
        outcome: proposal.outcome.clone(),
        decided_at: proposal.decided_at_ms.map(time),
        monitor_until: proposal.monitor_until_ms.map(time),
        brake_expires_at: proposal.brake_expires_at_ms.map(time),
        confirmed_by: proposal.confirmed_by.clone(),
        limit: match &proposal.target {
            ProposalTarget::Limit { limit, .. } => Some(limit.clone()),
            _ => None,
        },
        effect: None,
        vote: None,
        seq: None,
    }
}
