//! The LLM gateway's routes. `POST /v1/chat/completions` and `POST /v1/messages`
//! take and answer the OpenAI and Anthropic shapes (the official clients work
//! unchanged); Colony reads `model`, `messages`, `max_tokens` and `stream` from them
//! and passes the rest through. `GET /v1/models` lists what Colony routes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An OpenAI chat completion request (`model` may be a Colony model, an alias, or
/// `auto`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatRequest {
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Anything else OpenAI's API takes, passed through.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// An OpenAI embeddings request: `input` is a string, an array of strings, or token
/// ids (at most 2 048 inputs); priced by input tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    pub model: String,
    #[schema(value_type = Object)]
    pub input: Value,
    /// Anything else OpenAI's API takes (`encoding_format`, `dimensions`, `user`),
    /// passed through.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// An OpenAI Responses API request: `input` is a string or an array of items;
/// `max_output_tokens` bounds the output (the model's own bound when absent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResponsesRequest {
    pub model: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Anything else OpenAI's API takes (`instructions`, `tools`...), passed through.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// An Anthropic messages request (key in `x-api-key` or a bearer token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessagesRequest {
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
    pub max_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Anything else Anthropic's API takes, passed through.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// The upstream's answer in its own shape (OpenAI's chat completion or Anthropic's
/// message), or a `text/event-stream` when `stream` was asked; Colony adds the
/// `x-colony-model`, `x-colony-reserved-micro-usd` and `x-colony-cost-micro-usd`
/// headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub body: Map<String, Value>,
}

/// `GET /v1/models`, in OpenAI's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<ModelEntry>,
}

/// A model, an alias, or the router (`auto`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelEntry {
    pub id: String,
    /// `model`.
    pub object: String,
    pub created: u64,
    /// The upstream serving it, `alias` or `router`.
    pub owned_by: String,
    pub colony: ModelExtras,
}

/// What Colony knows about a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_usd_per_million: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_usd_per_million: Option<f64>,
    /// Models tried, in order, when this one's upstream fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<String>>,
    /// Served by Colony's scripted upstream (tests and demos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
    /// The model `auto` routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A refusal as OpenAI clients parse it (`POST /v1/chat/completions`); `code` and
/// `message` are Colony's, as in [`crate::ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

/// OpenAI's error fields, with Colony's details under `colony`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// OpenAI's error type (`insufficient_quota`, `invalid_request_error`...).
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: String,
    #[schema(value_type = Object)]
    pub colony: Map<String, Value>,
}

/// A refusal as Anthropic clients parse it (`POST /v1/messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnthropicError {
    /// `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: AnthropicErrorDetail,
}

/// Anthropic's error fields, with Colony's code and details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnthropicErrorDetail {
    /// Anthropic's error type (`rate_limit_error`, `invalid_request_error`...).
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub code: String,
    #[schema(value_type = Object)]
    pub colony: Map<String, Value>,
}
