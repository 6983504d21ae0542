//! Artifacts: `POST /v1/artifacts` (deploy), `GET /v1/artifacts`,
//! `GET /v1/artifacts/{address}`, `POST /v1/artifacts/{address}/stop|start`,
//! `GET /v1/artifacts/{address}/logs`. The kernel decides deploys, starts and
//! stops; the runtime (`colony-artifacts`) runs them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use colony_api::artifacts::{
    ArtifactList, ArtifactLogLine, ArtifactLogs, ArtifactView, DeployArtifact, LogsQuery,
};
use colony_api::{ErrorBody, Justified};
use colony_artifacts::{Deploy, DeployError};
use colony_kernel::{CommandBody, Decision, PrincipalId};

use super::{check_amount, parse_resource, require_justification, AppState, Body, Params, Segment};
use crate::auth::Caller;
use crate::ApiError;

pub use crate::route::ARTIFACT_BODY_BYTES_MAX;

fn view(app: &AppState, principal: PrincipalId, seq: Option<u64>) -> Option<ArtifactView> {
    let status = app.shared.artifacts.status(principal);
    let state = app.shared.state.read().expect("state lock");
    let artifact = state.artifact(principal)?;
    let deployer = state
        .principal(artifact.deployer)
        .map_or_else(|| artifact.deployer.to_string(), |p| p.address.clone());
    let usage = status.usage;
    // Meant to run but not started yet: the reconciler starts it within a moment.
    let run_state = match status.state {
        colony_artifacts::RunState::Stopped if artifact.run && status.last_error.is_none() => {
            colony_artifacts::RunState::Running
        }
        other => other,
    };
    Some(ArtifactView {
        address: artifact.address.clone(),
        name: artifact.name.clone(),
        digest: artifact.digest.clone(),
        bytes: artifact.bytes,
        deployer,
        deployed_at: colony_api::format_time(artifact.deployed_at_ms),
        run: artifact.run,
        state: run_state.as_str().to_string(),
        exhausted: status
            .exhausted
            .as_ref()
            .map(|(resource, _)| resource.clone()),
        refill_at: status
            .exhausted
            .as_ref()
            .and_then(|(_, at)| at.map(colony_api::format_time)),
        last_error: status.last_error.clone(),
        usage,
        balances: super::ledger::balances_of(
            &state,
            principal,
            colony_pipeline::sequencer::now_ms(),
        ),
        seq,
    })
}

fn artifact_at(app: &AppState, address: &str) -> Result<PrincipalId, ApiError> {
    let id = app.principal_at(address)?;
    let state = app.shared.state.read().expect("state lock");
    state.artifact(id).map(|a| a.principal).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{address} is not an artifact"),
        )
        .with("address", address)
    })
}

/// Deploys a WebAssembly module as an artifact under the caller: checked (it
/// imports only Colony's host API and exports `run` and `memory`), stored by digest,
/// its bytes charged to the caller's `disk_bytes`, and started unless `run` is false.
#[utoipa::path(post, path = "/v1/artifacts", tag = "artifacts", request_body = DeployArtifact,
    responses((status = 201, body = ArtifactView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn deploy(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<DeployArtifact>,
) -> Result<(StatusCode, Json<ArtifactView>), ApiError> {
    let justification = require_justification(request.justification)?;
    let bytes = match (request.wasm_base64, request.wat) {
        (Some(encoded), None) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| ApiError::bad_request("invalid_module", format!("wasm_base64: {e}")))?,
        (None, Some(text)) => text.into_bytes(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give the module as exactly one of `wasm_base64` or `wat`",
            ))
        }
    };
    let mut quotas = Vec::new();
    for (name, amount) in request.quotas.unwrap_or_default() {
        let resource = parse_resource(&name)?;
        quotas.push((resource, check_amount(&format!("quotas.{name}"), amount)?));
    }
    let deploy = Deploy {
        name: request.name,
        bytes,
        quotas,
        run: request.run.unwrap_or(true),
        justification,
    };
    let event = app
        .shared
        .artifacts
        .deploy(caller.id, deploy)
        .await
        .map_err(|error| match error {
            DeployError::Module(error) => {
                ApiError::bad_request("invalid_module", error.to_string())
            }
            DeployError::Store(message) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
            }
            DeployError::Unavailable(error) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.message,
            ),
        })?;
    if event.decision == Decision::Denied {
        return Err(ApiError::from_denial(
            &event.reason,
            colony_pipeline::sequencer::now_ms(),
        ));
    }
    let colony_kernel::Effect::ArtifactDeployed { id, .. } = event.effect else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the deploy was allowed but made no artifact",
        ));
    };
    let seq = app.shared.state.read().expect("state lock").last_seq;
    let made = view(&app, id, Some(seq)).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the artifact is gone",
        )
    })?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// Every artifact, with its state and usage.
#[utoipa::path(get, path = "/v1/artifacts", tag = "artifacts",
    responses((status = 403, body = ErrorBody), (status = 200, body = ArtifactList)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<ArtifactList>, ApiError> {
    app.check_read(&caller, "artifacts", app.shared.read.artifacts)?;
    let ids: Vec<PrincipalId> = {
        let state = app.shared.state.read().expect("state lock");
        state.artifacts().map(|a| a.principal).collect()
    };
    let artifacts = ids
        .into_iter()
        .filter_map(|id| view(&app, id, None))
        .collect();
    Ok(Json(ArtifactList { artifacts }))
}

/// One artifact.
#[utoipa::path(get, path = "/v1/artifacts/{address}", tag = "artifacts", params(("address" = String, Path)),
    responses((status = 403, body = ErrorBody), (status = 200, body = ArtifactView), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    app.check_read(&caller, "artifacts", app.shared.read.artifacts)?;
    let id = artifact_at(&app, &address)?;
    view(&app, id, None)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "the artifact is gone"))
}

async fn set_run(
    app: &AppState,
    caller: &Caller,
    address: &str,
    request: Justified,
    run: bool,
) -> Result<Json<ArtifactView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let id = artifact_at(app, address)?;
    let outcome = app
        .decide(
            caller.id,
            justification,
            CommandBody::SetArtifactRun { artifact: id, run },
        )
        .await?;
    app.shared.artifacts.poke();
    view(app, id, Some(outcome.seq))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "the artifact is gone"))
}

/// Stops an artifact after its current turn (its deployer, an ancestor, or an admin).
#[utoipa::path(post, path = "/v1/artifacts/{address}/stop", tag = "artifacts", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = ArtifactView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<Justified>,
) -> Result<Json<ArtifactView>, ApiError> {
    set_run(&app, &caller, &address, request, false).await
}

/// Starts an artifact afresh (a new instance; its key-value store is kept).
#[utoipa::path(post, path = "/v1/artifacts/{address}/start", tag = "artifacts", params(("address" = String, Path)), request_body = Justified,
    responses((status = 200, body = ArtifactView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn start(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Body(request): Body<Justified>,
) -> Result<Json<ArtifactView>, ApiError> {
    set_run(&app, &caller, &address, request, true).await
}

/// What an artifact logged (the newest `log_lines_max` lines; `?after=SEQ` for
/// those after one already seen).
#[utoipa::path(get, path = "/v1/artifacts/{address}/logs", tag = "artifacts", params(("address" = String, Path), ("after" = Option<u64>, Query)),
    responses((status = 403, body = ErrorBody), (status = 200, body = ArtifactLogs), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(app): State<AppState>,
    caller: Caller,
    Segment(address): Segment<String>,
    Params(query): Params<LogsQuery>,
) -> Result<Json<ArtifactLogs>, ApiError> {
    app.check_read(&caller, "artifacts", app.shared.read.artifacts)?;
    let id = artifact_at(&app, &address)?;
    let after = query.after.unwrap_or(0);
    let lines = app
        .shared
        .artifacts
        .status(id)
        .logs
        .into_iter()
        .filter(|line| line.seq > after)
        .map(|line| ArtifactLogLine {
            seq: line.seq,
            at: colony_api::format_time(line.at_ms),
            text: line.text,
        })
        .collect();
    Ok(Json(ArtifactLogs { address, lines }))
}
