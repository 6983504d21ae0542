//! Admission queues: requests waiting past a soft limit, admitted best first as soon
//! as the limit allows.

use super::*;

impl State {
    /// Admits queued requests, best first, while their limit is below soft.
    pub(super) fn admit_waiting(&mut self, events: &mut Vec<Event>) {
        let waiting = self.limits.with_queue();
        for name in waiting {
            loop {
                let limit = self.limits.get(&name).expect("a limit with a queue");
                let Some(front) = limit.queue.first() else {
                    break;
                };
                if !matches!(limit.gate(1), Gate::Allow | Gate::Warn(_)) {
                    break;
                }
                let queued = front.clone();
                self.limits.edit(&name).expect("exists").queue.remove(0);
                let actor_ok = self
                    .principals
                    .get(queued.actor)
                    .is_some_and(|p| p.standing)
                    && !self.anomaly.is_quarantined(queued.actor);
                let body = match &queued.request {
                    crate::limits::AdmissionRequest::CreatePrincipal(request) => {
                        CommandBody::CreatePrincipal(request.clone())
                    }
                    crate::limits::AdmissionRequest::RegisterWorker(new) => {
                        CommandBody::RegisterWorker(Box::new(new.clone()))
                    }
                };
                let command = Command::new(
                    queued.ticket,
                    self.now_ms,
                    queued.actor,
                    queued.justification.clone(),
                    body,
                );
                let event = match (&queued.request, actor_ok) {
                    (_, false) => Event::denied(
                        command.body.name(),
                        format!("ticket:{}", queued.ticket),
                        Reason::NoStanding {
                            actor: queued.actor,
                        },
                    ),
                    (crate::limits::AdmissionRequest::CreatePrincipal(request), true) => {
                        self.create_principal(&command, request, Some(&queued))
                    }
                    (crate::limits::AdmissionRequest::RegisterWorker(new), true) => {
                        let address = self.principals.known(queued.actor).address.clone();
                        self.register_worker(&command, &address, new, Some(&queued))
                    }
                };
                events.push(event);
            }
        }
    }
}
