//! Everything decided before an upstream is called: the request checked, the model
//! routed and its fallback chain priced at the worst case, the principal's allowance
//! and the task's budget checked, and the cost reserved through the kernel.

use std::sync::Arc;

use colony_kernel::{CommandBody, Effect, PrincipalId, Resource};
use serde_json::Value;

use crate::settle::Settlement;
use crate::{cost_micro_usd, denial, input_token_bound, invalid, Gateway, Model, Refusal};

/// Who makes a call.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub id: PrincipalId,
    pub address: &'a str,
}

/// A call admitted and reserved, ready for [`Gateway::call`].
pub struct Prepared {
    pub(crate) chain: Vec<Model>,
    pub(crate) input_bound: u64,
    pub(crate) max_tokens: u64,
    /// Micro-dollars reserved for the worst case of the chain.
    pub reserved: u64,
    pub(crate) settlement: Settlement,
}

/// The model a request names; the body must be a JSON object.
pub(crate) fn requested_model(body: &Value) -> Result<&str, Refusal> {
    if !body.is_object() {
        return Err(invalid("the body must be a JSON object"));
    }
    body["model"]
        .as_str()
        .ok_or_else(|| invalid("`model` is required (GET /v1/models lists them)"))
}

/// The task a call is made for, as its lease holder sees it.
struct ForTask {
    address: colony_kernel::TaskAddress,
    token: u64,
    capabilities: Vec<String>,
    priority: colony_kernel::Priority,
    remaining: Option<u64>,
}

impl Gateway {
    /// Checks `body` (OpenAI's chat shape), routes the model (`auto` by the task's
    /// capabilities and priority), admits the call within `caller`'s allowance and
    /// reserves its worst-case cost from its `llm_budget_usd`. `task` is the task the
    /// call is for (the `X-Colony-Task` header); the caller must hold its lease.
    pub async fn prepare(
        self: &Arc<Gateway>,
        caller: Caller<'_>,
        task: Option<&str>,
        body: &Value,
    ) -> Result<Prepared, Refusal> {
        let requested = requested_model(body)?;
        if !body["messages"].is_array() {
            return Err(invalid("`messages` must be an array"));
        }
        let max_tokens = body["max_tokens"]
            .as_u64()
            .or(body["max_completion_tokens"].as_u64());
        let input_bound = input_token_bound(body);
        self.reserve_call(
            caller,
            task,
            requested,
            max_tokens,
            input_bound,
            &body["messages"],
        )
        .await
    }

    /// Routes the model (`auto` by the task's capabilities and priority), admits the
    /// call within `caller`'s allowance and reserves the worst case of `input_bound`
    /// input tokens and `max_tokens` output tokens (the model's own bound when
    /// `None`) on the model's fallback chain. `prompt` is what `log_prompts` records.
    pub(crate) async fn reserve_call(
        self: &Arc<Gateway>,
        caller: Caller<'_>,
        task: Option<&str>,
        requested: &str,
        max_tokens: Option<u64>,
        input_bound: u64,
        prompt: &Value,
    ) -> Result<Prepared, Refusal> {
        let config = &self.config;
        let trace = crate::CallTrace::current(self);
        let task = task
            .map(|address| self.task_of(caller, address))
            .transpose()?;
        let model_name = match (requested, &task) {
            ("auto", Some(task)) => config.route(&task.capabilities, task.priority).to_string(),
            ("auto", None) => config.default_model.clone(),
            (name, _) => name.to_string(),
        };
        let model = config.resolve(&model_name).cloned().ok_or_else(|| {
            Refusal::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("no model {requested:?} here; GET /v1/models lists them"),
            )
        })?;
        let max_tokens = max_tokens.unwrap_or(model.max_output_tokens);
        let chain = self.chain(&model);
        let reserved = chain
            .iter()
            .map(|m| cost_micro_usd(m, input_bound, max_tokens))
            .max()
            .unwrap_or(0)
            .max(1);
        if let Some(task) = &task {
            task_can_pay(task, reserved, input_bound, max_tokens, &model.name)?;
        }
        trace.set(|| {
            use opentelemetry::KeyValue;
            let kind = config.upstreams[&model.upstream].kind;
            vec![
                KeyValue::new("gen_ai.provider.name", crate::trace::provider_name(kind)),
                KeyValue::new("gen_ai.request.max_tokens", max_tokens as i64),
                KeyValue::new("colony.model", model.name.clone()),
                KeyValue::new("colony.input_tokens_bound", input_bound as i64),
                KeyValue::new("colony.reserved_micro_usd", reserved as i64),
            ]
        });
        if config.log_prompts {
            trace.prompt(prompt);
        }
        let now_ms = colony_pipeline::sequencer::now_ms();
        let admission = self.admit(caller.id, input_bound + max_tokens, now_ms)?;
        let justification = justification(
            &model.name,
            input_bound,
            max_tokens,
            task.as_ref(),
            config.log_prompts.then_some(prompt),
        );
        let reservation = self
            .reserve_budget(caller, justification, reserved, &trace)
            .await?;
        trace.set(|| {
            vec![opentelemetry::KeyValue::new(
                "colony.reservation",
                reservation as i64,
            )]
        });
        Ok(Prepared {
            chain,
            input_bound,
            max_tokens,
            reserved,
            settlement: Settlement {
                submitter: self.submitter.clone(),
                caller: caller.id,
                reservation,
                // Only a task with a budget is charged (subtasks of a decomposition
                // have none of their own unless their poster gave them one).
                task: task
                    .filter(|t| t.remaining.is_some())
                    .map(|t| (t.address, t.token)),
                admission: Some(admission),
                done: false,
                note: format!("{} for {}", model.name, caller.address),
                trace,
            },
        })
    }

    /// The worst case reserved on the caller's LLM budget through the kernel: the
    /// reservation, or the kernel's refusal as the API tells it.
    async fn reserve_budget(
        &self,
        caller: Caller<'_>,
        justification: String,
        reserved: u64,
        trace: &crate::CallTrace,
    ) -> Result<u64, Refusal> {
        let span = trace.kernel("reserve");
        let outcome = self
            .submitter
            .submit_decided(
                caller.id,
                justification,
                CommandBody::Reserve {
                    resource: Resource::LlmBudgetUsd,
                    amount: reserved,
                    ttl_ms: Some(self.config.timeout_ms * 2 + 60_000),
                },
            )
            .await;
        if let Some(mut span) = span {
            crate::trace::decided(&mut span, &outcome);
        }
        let outcome =
            outcome.map_err(|error| Refusal::new(503, "api_error", error.code, error.message))?;
        match (&outcome.primary.decision, &outcome.primary.effect) {
            (decision, Effect::Reserved { reservation, .. }) if decision.is_allowed() => {
                Ok(*reservation)
            }
            _ => Err(denial(&outcome.primary.reason, outcome.at_ms)),
        }
    }

    /// The task at `address`, whose lease `caller` must hold.
    fn task_of(&self, caller: Caller<'_>, address: &str) -> Result<ForTask, Refusal> {
        let state = self.state.read().expect("state lock");
        let task = state.task(address).ok_or_else(|| {
            Refusal::new(
                404,
                "invalid_request_error",
                "not_found",
                format!("no task {address}"),
            )
        })?;
        let lease = task
            .lease
            .as_ref()
            .filter(|lease| lease.holder == caller.id)
            .ok_or_else(|| {
                Refusal::new(
                    403,
                    "permission_error",
                    "forbidden",
                    format!(
                        "{} does not hold the lease of task {address}: claim it first",
                        caller.address
                    ),
                )
            })?;
        Ok(ForTask {
            address: task.address.clone(),
            token: lease.token,
            capabilities: task.capabilities.clone(),
            priority: task.priority,
            remaining: task.budget.as_ref().map(|b| b.remaining_micro_usd),
        })
    }
}

/// A task with a budget pays for the call's worst case, or the call is refused
/// (`429 insufficient_quota`, `resource: task_budget`).
fn task_can_pay(
    task: &ForTask,
    reserved: u64,
    input_bound: u64,
    max_tokens: u64,
    model: &str,
) -> Result<(), Refusal> {
    let Some(remaining) = task.remaining else {
        return Ok(());
    };
    if remaining >= reserved {
        return Ok(());
    }
    let address = &task.address;
    Err(Refusal::new(
        429,
        "insufficient_quota",
        "insufficient_resource",
        format!(
            "task {address} has {remaining} micro-USD of budget left; this call may cost up to {reserved} \
             ({input_bound} input tokens at most + {max_tokens} output tokens on {model})"
        ),
    )
    .with("resource", "task_budget")
    .with("task", address.as_str())
    .with("requested", reserved)
    .with("available", remaining))
}

/// Why the call's reservation is made: the model and the token bounds, the task,
/// and (with `log_prompts`) the prompt, bounded to what a justification may hold.
fn justification(
    model: &str,
    input_bound: u64,
    max_tokens: u64,
    task: Option<&ForTask>,
    prompt: Option<&Value>,
) -> String {
    let mut justification = format!(
        "llm call to {model}: at most {input_bound} input + {max_tokens} output tokens{}",
        task.map(|t| format!(", for task {}", t.address))
            .unwrap_or_default()
    );
    if let Some(prompt) = prompt {
        let prompt = prompt.to_string();
        let room = colony_kernel::JUSTIFICATION_BYTES_MAX.saturating_sub(justification.len() + 16);
        let prompt = crate::trace::bounded(&prompt, room);
        justification.push_str(&format!("; prompt: {prompt}"));
    }
    justification
}
