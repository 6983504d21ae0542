//! Colony's host API, version 1: the functions an artifact imports from the module
//! `colony` (documented in `docs/artifacts.md`). Every call costs one `io_ops` of the
//! artifact's turn allowance; what a call answers (a value, or an error's message)
//! is copied out with `result`.
//!
//! Return values: `>= 0` is success (a length, or 0); negative values are errors
//! ([`code`]). Pointers and lengths are `i32` offsets into the guest's `memory`.

use wasmtime::{Caller, Extern, Linker, ValType};

use crate::instance::HostState;

/// Error codes a host call returns.
pub mod code {
    /// Nothing there (a key, a message, a claimable task).
    pub const NONE: i32 = -1;
    /// The output buffer is too small (`result`): call again with the length.
    pub const TOO_SMALL: i32 = -2;
    /// Denied by a quota or a limit; `result` says which.
    pub const DENIED: i32 = -3;
    /// Bad input (a pointer out of memory, bad UTF-8 or JSON, a value too long).
    pub const INVALID: i32 = -4;
    /// Not allowed (a subject outside the artifact's authorization).
    pub const FORBIDDEN: i32 = -5;
    /// The node could not serve it now (shutting down, overloaded, an upstream down).
    pub const UNAVAILABLE: i32 = -6;
    /// This turn's host calls are used up: return from `run` and go on next turn.
    pub const TURN_SPENT: i32 = -7;
}

/// A host call's failure: its code and what `result` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    pub code: i32,
    pub message: String,
}

impl HostError {
    pub fn new(code: i32, message: impl Into<String>) -> HostError {
        HostError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> HostError {
        HostError::new(code::INVALID, message)
    }
}

/// One host function: what the guest imports.
pub struct HostFunction {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
    pub doc: &'static str,
}

impl HostFunction {
    /// `(i32, i32) -> i32`, as an error message shows it.
    pub fn signature(&self) -> String {
        let names = |types: &[ValType]| {
            types
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("({}) -> {}", names(self.params), names(self.results))
    }
}

const I: ValType = ValType::I32;

/// Every function of the host API, version 1.
pub const HOST_FUNCTIONS: &[HostFunction] = &[
    HostFunction { name: "log", params: &[I, I], results: &[I], doc: "log(ptr, len): one line in the artifact's log" },
    HostFunction { name: "now_ms", params: &[], results: &[ValType::I64], doc: "now_ms(): the kernel's time (of the last decision), Unix ms" },
    HostFunction { name: "result", params: &[I, I], results: &[I], doc: "result(ptr, cap): copies what the last call answered; its length, or TOO_SMALL" },
    HostFunction { name: "kv_get", params: &[I, I], results: &[I], doc: "kv_get(key, len): the value's length (then `result`), or NONE" },
    HostFunction { name: "kv_put", params: &[I, I, I, I], results: &[I], doc: "kv_put(key, len, value, len): 0; stored bytes cost disk_bytes" },
    HostFunction { name: "kv_delete", params: &[I, I], results: &[I], doc: "kv_delete(key, len): 0, or NONE" },
    HostFunction { name: "publish", params: &[I, I, I, I], results: &[I], doc: "publish(subject, len, json, len): 0; the bus's subject authorization applies" },
    HostFunction { name: "subscribe", params: &[I, I], results: &[I], doc: "subscribe(pattern, len): 0; messages wait in the artifact's inbox" },
    HostFunction { name: "receive", params: &[], results: &[I], doc: "receive(): the next message's length (JSON: subject, data, from), or NONE" },
    HostFunction { name: "task_post", params: &[I, I], results: &[I], doc: "task_post(json, len): the new task's address's length" },
    HostFunction { name: "task_claim", params: &[I, I], results: &[I], doc: "task_claim(json, len): the claimed task's length (JSON with its lease token), or NONE" },
    HostFunction { name: "task_complete", params: &[I, I], results: &[I], doc: "task_complete(json, len): 0; {address, token, result}" },
    HostFunction { name: "llm_chat", params: &[I, I], results: &[I], doc: "llm_chat(json, len): the answer's length; an OpenAI chat request through the gateway, charged to llm_budget_usd" },
];

fn memory(caller: &mut Caller<'_, HostState>) -> Result<wasmtime::Memory, HostError> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(HostError::invalid("the artifact exports no memory")),
    }
}

/// Reads `len` bytes at `ptr` of the guest's memory, at most `max`.
fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<Vec<u8>, HostError> {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return Err(HostError::invalid("a pointer or length is negative"));
    };
    if len > max {
        return Err(HostError::invalid(format!(
            "{len} bytes is more than the {max} this call takes"
        )));
    }
    let memory = memory(caller)?;
    let mut buf = vec![0; len];
    memory
        .read(&*caller, ptr, &mut buf)
        .map_err(|_| HostError::invalid("a pointer and length reach past the memory"))?;
    Ok(buf)
}

/// Runs one host call: charges it to the turn's allowance, then answers its value
/// (kept for `result` when it is bytes) or its error (message kept for `result`).
fn call(
    caller: &mut Caller<'_, HostState>,
    body: impl FnOnce(&mut Caller<'_, HostState>) -> Result<Answer, HostError>,
) -> i32 {
    let outcome = caller
        .data_mut()
        .charge_host_call()
        .and_then(|()| body(caller));
    let state = caller.data_mut();
    match outcome {
        Ok(Answer::Code(code)) => code,
        Ok(Answer::Bytes(bytes)) => {
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            state.result = bytes;
            len
        }
        Err(error) => {
            state.result = error.message.into_bytes();
            error.code
        }
    }
}

/// What a host call answers the guest.
pub(crate) enum Answer {
    Code(i32),
    /// Bytes kept for `result`; the call answers their length.
    Bytes(Vec<u8>),
}

/// Bytes from a guest as text.
fn text(bytes: Vec<u8>) -> Result<String, HostError> {
    String::from_utf8(bytes).map_err(|_| HostError::invalid("text must be UTF-8"))
}

/// The longest input a host call reads.
type Bound = fn(&HostState) -> usize;

/// What a host call taking one input (`ptr`, `len`) does with it.
type OneInput = fn(&mut Caller<'_, HostState>, Vec<u8>) -> Result<Answer, HostError>;

/// Defines a host function taking one input of at most `bound` bytes.
fn one_input(linker: &mut Linker<HostState>, name: &'static str, bound: Bound, body: OneInput) {
    linker
        .func_wrap(
            crate::module::HOST_MODULE,
            name,
            move |mut c: Caller<'_, HostState>, ptr: i32, len: i32| {
                call(&mut c, |c| {
                    let input = read(c, ptr, len, bound(c.data()))?;
                    body(c, input)
                })
            },
        )
        .unwrap_or_else(|error| panic!("defining {name}: {error}"));
}

fn subject_bound(_: &HostState) -> usize {
    256
}

fn input_bound(state: &HostState) -> usize {
    state.config.host_input_bytes_max
}

fn key_bound(state: &HostState) -> usize {
    state.config.kv_key_bytes_max
}

/// The linker with every host function, shared by all instances.
pub fn linker(engine: &wasmtime::Engine) -> Linker<HostState> {
    let mut linker = Linker::new(engine);
    let m = crate::module::HOST_MODULE;
    let log_bound: Bound = |state| state.config.log_line_bytes_max.saturating_mul(4);
    one_input(&mut linker, "log", log_bound, |c, bytes| {
        c.data_mut().log(&String::from_utf8_lossy(&bytes));
        Ok(Answer::Code(0))
    });
    linker
        .func_wrap(m, "now_ms", |c: Caller<'_, HostState>| -> i64 {
            i64::try_from(c.data().kernel.now_ms()).unwrap_or(i64::MAX)
        })
        .expect("now_ms");
    linker
        .func_wrap(
            m,
            "result",
            |mut c: Caller<'_, HostState>, ptr: i32, cap: i32| {
                // Free: copying out what was already paid for.
                let bytes = std::mem::take(&mut c.data_mut().result);
                let answer = (|| {
                    let (Ok(ptr), Ok(cap)) = (usize::try_from(ptr), usize::try_from(cap)) else {
                        return code::INVALID;
                    };
                    if cap < bytes.len() {
                        return code::TOO_SMALL;
                    }
                    match memory(&mut c) {
                        Ok(memory) if memory.write(&mut c, ptr, &bytes).is_ok() => {
                            i32::try_from(bytes.len()).unwrap_or(i32::MAX)
                        }
                        _ => code::INVALID,
                    }
                })();
                if answer == code::TOO_SMALL {
                    c.data_mut().result = bytes;
                }
                answer
            },
        )
        .expect("result");
    one_input(&mut linker, "kv_get", key_bound, |c, key| {
        match c.data().kv.get(&key) {
            Some(value) => Ok(Answer::Bytes(value.clone())),
            None => Err(HostError::new(code::NONE, "no such key")),
        }
    });
    linker
        .func_wrap(
            m,
            "kv_put",
            |mut c: Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vl: i32| {
                call(&mut c, |c| {
                    let key = read(c, kp, kl, c.data().config.kv_key_bytes_max)?;
                    let value = read(c, vp, vl, c.data().config.kv_value_bytes_max)?;
                    c.data_mut().kv_put(key, value)?;
                    Ok(Answer::Code(0))
                })
            },
        )
        .expect("kv_put");
    one_input(&mut linker, "kv_delete", key_bound, |c, key| {
        c.data_mut().kv_delete(&key)?;
        Ok(Answer::Code(0))
    });
    linker
        .func_wrap(
            m,
            "publish",
            |mut c: Caller<'_, HostState>, sp: i32, sl: i32, dp: i32, dl: i32| {
                call(&mut c, |c| {
                    let subject = text(read(c, sp, sl, subject_bound(c.data()))?)?;
                    let data = text(read(c, dp, dl, input_bound(c.data()))?)?;
                    serde_json::from_str::<&serde_json::value::RawValue>(&data)
                        .map_err(|_| HostError::invalid("a message's data is JSON"))?;
                    let state = c.data();
                    state.services.publish(&state.me, &subject, &data)?;
                    Ok(Answer::Code(0))
                })
            },
        )
        .expect("publish");
    one_input(&mut linker, "subscribe", subject_bound, |c, pattern| {
        c.data_mut().subscribe(&text(pattern)?)?;
        Ok(Answer::Code(0))
    });
    linker
        .func_wrap(m, "receive", |mut c: Caller<'_, HostState>| {
            call(&mut c, |c| {
                let state = c.data();
                match state.services.receive(&state.me) {
                    Some(message) => Ok(Answer::Bytes(message.into_bytes())),
                    None => Err(HostError::new(code::NONE, "the inbox is empty")),
                }
            })
        })
        .expect("receive");
    one_input(&mut linker, "task_post", input_bound, |c, request| {
        let address = c.data().post_task(&text(request)?)?;
        Ok(Answer::Bytes(address.into_bytes()))
    });
    one_input(&mut linker, "task_claim", input_bound, |c, request| {
        let task = c.data().claim_task(&text(request)?)?;
        Ok(Answer::Bytes(task.into_bytes()))
    });
    one_input(&mut linker, "task_complete", input_bound, |c, request| {
        c.data().complete_task(&text(request)?)?;
        Ok(Answer::Code(0))
    });
    one_input(&mut linker, "llm_chat", input_bound, |c, request| {
        let request = text(request)?;
        let state = c.data();
        let answer = state
            .kernel
            .block_on(state.services.chat(&state.me, request))?;
        Ok(Answer::Bytes(answer.into_bytes()))
    });
    linker
}
