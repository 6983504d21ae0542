//! `GET /v1/cluster`: this node's view of the cluster it runs in.

use axum::extract::State;
use axum::Json;
use colony_api::cluster::{AdmittedNode, ClusterView, NodeKeyRequest};
use colony_api::ErrorBody;
use colony_kernel::CommandBody;

use super::{require_justification, AppState, Body};
use crate::auth::Caller;
use crate::ApiError;

/// The nodes of the cluster with their applied sequence and lag, and the state of
/// the stream that holds the command log; `mode: "embedded"` on a node of its own.
#[utoipa::path(get, path = "/v1/cluster", tag = "node",
    responses((status = 200, body = ClusterView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn view(State(app): State<AppState>, _caller: Caller) -> Json<ClusterView> {
    let mut view = match &app.shared.cluster {
        Some(cluster) => cluster.view().await,
        None => ClusterView {
            mode: "embedded".into(),
            node: None,
            connected: true,
            server: None,
            follows_from: None,
            applied_seq: app.shared.state.read().expect("state lock").last_seq,
            stream: None,
            nodes: Vec::new(),
            public_key: String::new(),
            admitted: Vec::new(),
            divergences: 0,
            divergence: None,
        },
    };
    view.public_key = app.shared.heads.public_key();
    view.admitted = admitted(&app);
    Json(view)
}

fn admitted(app: &AppState) -> Vec<AdmittedNode> {
    let state = app.shared.state.read().expect("state lock");
    state
        .cluster_nodes()
        .map(|node| AdmittedNode {
            name: node.name.clone(),
            public_key: encode_key(&node.key),
            admitted_at: colony_api::format_time(node.admitted_at_ms),
            admitted_by: node.admitted_by.clone(),
            justification: node.justification.clone(),
            highest_seq: node.highest_seq,
        })
        .collect()
}

fn encode_key(key: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn decode_key(text: &str) -> Result<[u8; 32], ApiError> {
    colony_log::heads::decode_key(text)
        .map(|key| key.to_bytes())
        .map_err(|message| ApiError::bad_request("invalid_key", message))
}

/// Admits a node's key to the cluster (admins): its commands are applied from the
/// next one on. A new node's key is its `node.pub`, printed by `colony up`.
#[utoipa::path(post, path = "/v1/cluster/nodes", tag = "node", request_body = NodeKeyRequest,
    responses((status = 200, body = ClusterView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn admit(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<NodeKeyRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let name = request
        .name
        .ok_or_else(|| ApiError::bad_request("invalid_request", "`name` is required"))?;
    let key = decode_key(&request.public_key)?;
    let body = CommandBody::AdmitNode { name, key };
    app.decide(caller.id, justification, body).await?;
    Ok(view(State(app), caller).await)
}

/// Removes a node's key (admins; never the last): its commands are refused from
/// then on.
#[utoipa::path(post, path = "/v1/cluster/nodes/remove", tag = "node", request_body = NodeKeyRequest,
    responses((status = 200, body = ClusterView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Body(request): Body<NodeKeyRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    let justification = require_justification(request.justification)?;
    let key = decode_key(&request.public_key)?;
    app.decide(caller.id, justification, CommandBody::RemoveNode { key })
        .await?;
    Ok(view(State(app), caller).await)
}
