//! The kernel's side of the bus: stream definitions and edge usage reports.

use super::Effects;
use super::{invalid, State};
use crate::event::{Effect, Event};
use crate::ledger::{Resource, ResourceKind};
use crate::limits::LimitName;
use crate::principal::PrincipalId;
use crate::streams::{EdgeUsage, StreamSpec, STREAMS_MAX};

/// Most principals one edge report may name.
pub const EDGE_USAGE_ENTRIES_MAX: usize = 100_000;

impl State {
    pub fn stream(&self, name: &str) -> Option<&StreamSpec> {
        self.streams.get(name)
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamSpec> {
        self.streams.values()
    }

    /// The window of a flow resource (60 s before genesis).
    pub fn quota_window_ms(&self, resource: Resource) -> u64 {
        self.quotas
            .as_ref()
            .map_or(60_000, |quotas| quotas.window_ms(resource))
    }

    /// What `principal` may still consume of a flow or stock at `now_ms`, the
    /// tightest along its chain of parents (`None`: unlimited). Windows that turned
    /// since the last command count as refilled.
    pub fn available_at(
        &self,
        principal: PrincipalId,
        resource: Resource,
        now_ms: u64,
    ) -> Option<u64> {
        let quotas = self.quotas.as_ref()?;
        let mut tightest: Option<u64> = None;
        for member in self.chain(principal) {
            let Some(balance) = self.balances.get(&(member, resource)) else {
                continue;
            };
            let mut balance = balance.clone();
            if resource.kind() == ResourceKind::Flow {
                balance.roll_window(now_ms.max(self.now_ms), quotas.window_ms(resource));
            }
            if balance.quota.is_some() {
                let available = balance.available();
                tightest = Some(tightest.map_or(available, |t| t.min(available)));
            }
        }
        tightest
    }

    pub(super) fn define_stream(&mut self, spec: &StreamSpec) -> Event {
        const ACTION: &str = "stream.define";
        let subject = format!("stream:{}", spec.name);
        if let Err(message) = spec.validate() {
            return Event::denied(ACTION, subject, invalid(message));
        }
        let replaced = self.streams.contains_key(&spec.name);
        if !replaced && self.streams.len() >= STREAMS_MAX {
            return Event::denied(
                ACTION,
                subject,
                invalid(format!("a node keeps at most {STREAMS_MAX} streams")),
            );
        }
        for other in self
            .streams
            .values()
            .filter(|other| other.name != spec.name)
        {
            for mine in &spec.subjects {
                if let Some(theirs) = other.subjects.iter().find(|theirs| {
                    crate::subject::covers(theirs, mine) || crate::subject::covers(mine, theirs)
                }) {
                    return Event::denied(
                        ACTION,
                        subject,
                        invalid(format!(
                            "subject {mine:?} overlaps {theirs:?} of stream {:?}: a message is stored by one stream",
                            other.name
                        )),
                    );
                }
            }
        }
        self.streams.insert(spec.name.clone(), spec.clone());
        Event::allowed(
            ACTION,
            subject,
            Effect::StreamDefined {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                replaced,
            },
        )
    }

    pub(super) fn delete_stream(&mut self, name: &str) -> Event {
        const ACTION: &str = "stream.delete";
        match self.streams.remove(name) {
            Some(_) => Event::allowed(
                ACTION,
                format!("stream:{name}"),
                Effect::StreamDeleted { name: name.into() },
            ),
            None => Event::denied(
                ACTION,
                format!("stream:{name}"),
                super::not_found("stream", name),
            ),
        }
    }

    /// Charges what the edge let through. The edge admitted it against the exact
    /// balances, so it is charged even past a quota (a race with a command in
    /// between); what goes beyond is recorded as shortfall.
    pub(super) fn charge_edge(&mut self, fx: &mut Effects, usage: &[EdgeUsage]) -> Event {
        const ACTION: &str = "edge.charge";
        if usage.len() > EDGE_USAGE_ENTRIES_MAX {
            return Event::denied(
                ACTION,
                "edge",
                invalid(format!(
                    "an edge report names at most {EDGE_USAGE_ENTRIES_MAX} principals"
                )),
            );
        }
        let window_ms = self
            .quotas
            .as_ref()
            .expect("genesis applied")
            .window_ms(Resource::IoOps);
        let now_ms = self.now_ms;
        let (mut io_ops, mut data_bytes, mut shortfall, mut principals) = (0u64, 0u64, 0u64, 0);
        for entry in usage {
            if !self.principals.contains_key(&entry.principal) {
                continue;
            }
            if let Some(quarantined) = self.observe_signals(
                fx,
                entry.principal,
                &[(crate::anomaly::Signal::Publishes, entry.io_ops)],
            ) {
                fx.consequences.push(quarantined);
            }
            principals += 1;
            io_ops += entry.io_ops;
            data_bytes += entry.data_bytes;
            for member in self.chain(entry.principal) {
                if let Some(balance) = self.balances.get_mut(&(member, Resource::IoOps)) {
                    balance.roll_window(now_ms, window_ms);
                    let room = balance.available();
                    if entry.io_ops > room && member == entry.principal {
                        let over = entry.io_ops - room;
                        balance.shortfall = balance.shortfall.saturating_add(over);
                        shortfall += over;
                    }
                    balance.used = balance.used.saturating_add(entry.io_ops);
                }
            }
        }
        if let Some(limit) = self.limits.get_mut(&LimitName::DataCreationBytes) {
            limit.roll_window(now_ms);
            limit.usage = limit.usage.saturating_add(data_bytes);
        }
        Event::allowed(
            ACTION,
            "edge",
            Effect::EdgeCharged {
                principals,
                io_ops,
                data_bytes,
                shortfall,
            },
        )
    }
}
