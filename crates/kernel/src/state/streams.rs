//! The kernel's side of the bus: stream definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, State};
use crate::event::{Effect, Event};
use crate::ledger::{Resource, ResourceKind};
use crate::principal::PrincipalId;
use crate::streams::{StreamSpec, STREAMS_MAX};

/// The part of the state that holds the durable streams' definitions, by name. It
/// encodes as the map the state held before it had parts: a snapshot's encoding is
/// the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Streams {
    by_name: BTreeMap<String, StreamSpec>,
}

impl Streams {
    fn get(&self, name: &str) -> Option<&StreamSpec> {
        self.by_name.get(name)
    }

    fn all(&self) -> impl Iterator<Item = &StreamSpec> {
        self.by_name.values()
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn len(&self) -> usize {
        self.by_name.len()
    }

    /// `spec` in force, in place of any stream of its name.
    fn define(&mut self, spec: StreamSpec) {
        self.by_name.insert(spec.name.clone(), spec);
    }

    fn remove(&mut self, name: &str) -> Option<StreamSpec> {
        self.by_name.remove(name)
    }
}

impl State {
    pub fn stream(&self, name: &str) -> Option<&StreamSpec> {
        self.streams.get(name)
    }

    /// Every stream's definition, owned (for a node to open them).
    pub fn stream_specs(&self) -> Vec<StreamSpec> {
        self.streams.all().cloned().collect()
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamSpec> {
        self.streams.all()
    }

    /// The window of a flow resource (60 s before genesis).
    pub fn quota_window_ms(&self, resource: Resource) -> u64 {
        self.quotas.window_ms(resource)
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
        let quotas = &self.quotas;
        let mut tightest: Option<u64> = None;
        for member in self.chain(principal) {
            let Some(balance) = self.book.balance(member, resource) else {
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
        let replaced = self.streams.contains(&spec.name);
        if !replaced && self.streams.len() >= STREAMS_MAX {
            return Event::denied(
                ACTION,
                subject,
                invalid(format!("a node keeps at most {STREAMS_MAX} streams")),
            );
        }
        for other in self.streams.all().filter(|other| other.name != spec.name) {
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
        self.streams.define(spec.clone());
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
}
