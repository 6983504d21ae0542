//! A kernel for the crate's unit tests: commands applied as the sequencer would.

use std::sync::{Arc, RwLock};

use colony_kernel::{Command, CommandBody, Effect, Genesis, PrincipalId, State};

/// Applies `body` as the system's next command; its first effect.
pub(crate) fn logged(state: &Arc<RwLock<State>>, body: CommandBody) -> Effect {
    let mut state = state.write().unwrap();
    let command = Command::new(
        state.last_seq + 1,
        colony_pipeline::sequencer::now_ms().max(state.now_ms),
        PrincipalId::SYSTEM,
        "test",
        body,
    );
    state.apply(&command).primary().effect.clone()
}

/// A kernel after `genesis`.
pub(crate) fn kernel(genesis: Genesis) -> Arc<RwLock<State>> {
    let state = Arc::new(RwLock::new(State::new()));
    logged(&state, CommandBody::Genesis(Box::new(genesis)));
    state
}
