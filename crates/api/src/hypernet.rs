//! The Hypernet swarm's task routes (HYPERNET.md), in their old shapes: `/tasks...`.
//! Their limits' shapes are in [`crate::limits`].

use colony_kernel::Priority;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OldTaskRequest {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// `GET /tasks` filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OldListQuery {
    pub tag: Option<String>,
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Option<Priority>,
    pub status: Option<String>,
    pub limit: Option<usize>,
}

/// `POST /tasks/{address}/{action}` (the body may be empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldActionRequest {
    /// Ignored: the caller's token says who acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
}

/// A task in the old swarm's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldTask {
    pub address: String,
    pub title: String,
    pub description: String,
    /// The old statuses (a dead task is `failed`); `colony_status` is Colony's.
    pub status: String,
    #[schema(schema_with = crate::schema::priority)]
    pub priority: Priority,
    pub created_by: String,
    pub assigned_to: Option<String>,
    pub tags: Vec<String>,
    /// The last `progress` reported (any JSON).
    #[serde(default)]
    pub progress: Value,
    /// Any JSON.
    #[serde(default)]
    pub result: Value,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub failed_at: Option<String>,
    pub failure_reason: Option<String>,
    pub released_at: Option<String>,
    pub depends_on: Vec<String>,
    pub colony_status: String,
}

/// `GET /tasks`, `GET /tasks/mine/{assignee}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldTaskList {
    pub tasks: Vec<OldTask>,
    pub count: usize,
}
