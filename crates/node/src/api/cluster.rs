//! `GET /v1/cluster`: this node's view of the cluster it runs in.

use axum::extract::State;
use axum::Json;
use colony_api::cluster::ClusterView;
use colony_api::ErrorBody;

use super::AppState;
use crate::auth::Caller;

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
            applied_seq: app.shared.state.read().expect("state lock").last_seq,
            stream: None,
            nodes: Vec::new(),
            public_key: String::new(),
        },
    };
    view.public_key = app.shared.heads.public_key();
    Json(view)
}
