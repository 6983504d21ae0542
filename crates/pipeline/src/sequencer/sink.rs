//! How durable decisions leave the pipeline: a [`DecisionSink`] (the bus) behind an
//! [`EventTap`], without the pipeline naming the bus.

use super::*;

/// What hears of decisions once they are durable. The bus implements it; the
/// sequencer never names the bus.
pub trait DecisionSink: Send + Sync {
    /// Whether anyone wants the decisions (publishing costs nothing otherwise).
    fn wants_decisions(&self) -> bool;
    /// Whether anyone wants the offers of tasks that became claimable.
    fn wants_offers(&self) -> bool;
    /// Tasks that became claimable.
    fn offer(&self, tasks: &[colony_kernel::TaskAddress]);
    /// Worker sessions an admission queue admitted.
    fn admitted(&self, workers: &[u64]);
    /// A command and every decision it led to.
    fn decided(&self, command: &Command, events: &[Event]);
}

/// Where the sequencer publishes decisions once they are durable: the sink, set
/// once it exists (the bus is made after the sequencer starts).
#[derive(Default)]
pub struct EventTap {
    pub(crate) sink: std::sync::OnceLock<Arc<dyn DecisionSink>>,
}

impl EventTap {
    pub fn connect(&self, sink: Arc<dyn DecisionSink>) {
        let _ = self.sink.set(sink);
    }

    pub(crate) fn wanted(&self) -> bool {
        self.sink.get().is_some_and(|sink| sink.wants_decisions())
    }

    pub(crate) fn offers_wanted(&self) -> bool {
        self.sink.get().is_some_and(|sink| sink.wants_offers())
    }
}
