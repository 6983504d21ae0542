//! Idle connections without a task of their own.
//!
//! A plain TCP connection on which nothing happened for [`super::wire::PARK_AFTER`]
//! (nothing to write, no ack deadline, not closing) gives up its task: its session
//! and socket move into an [`Entry`], which is itself the waker registered with the
//! two things that can need the session again, the socket's read readiness (tokio's
//! reactor) and the connection's signal (a message, an answer, a close). The first
//! of them to wake it spawns a task again that carries on where the old one stopped.
//!
//! An idle connection then costs its entry (the session's state, about 200 bytes)
//! instead of a task (the session's whole future inside tokio's 128-byte-aligned
//! task cell, 384 to 512 bytes), and busy connections keep their task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Wake, Waker};

use tokio::net::TcpStream;

use super::wire::{Socket, Wire};
use super::Session;
use crate::ws::Decoder;

/// A parked session: what its task held, less what is empty while it is quiet (the
/// write buffer, the timer).
pub(super) struct Parked {
    session: Session,
    tcp: TcpStream,
    /// Only when it holds the start of a frame or message.
    decoder: Option<Box<Decoder>>,
}

impl Parked {
    /// The session and its socket, to be served again.
    pub(super) fn unpark(self) -> (Session, Wire) {
        let decoder = match self.decoder {
            Some(decoder) => *decoder,
            None => Decoder::new(self.session.bus.config.frame_bytes_max),
        };
        (self.session, Wire::new(Socket::Tcp(self.tcp), decoder))
    }
}

/// A parked session and the waker that resumes it.
struct Entry {
    parked: Mutex<Option<Parked>>,
    /// A wake that came while the entry was being set up (its lock held).
    missed: AtomicBool,
}

impl Wake for Entry {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parked = match self.parked.try_lock() {
            Ok(mut parked) => parked.take(),
            Err(TryLockError::WouldBlock) => {
                // Being parked right now, or taken by another wake: `park` looks
                // at this once it lets go of the lock.
                self.missed.store(true, Ordering::Release);
                None
            }
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
        };
        if let Some(parked) = parked {
            resume(parked);
        }
    }
}

/// Parks a quiet session; gives it back when something already woke it (the
/// caller carries on serving it in its own task) or its socket is not plain TCP.
pub(super) fn park(session: Session, wire: Wire) -> Option<(Session, Wire)> {
    let (tcp, decoder) = match wire.into_parts() {
        (Socket::Tcp(tcp), decoder) => (tcp, decoder),
        (other, decoder) => return Some((session, Wire::new(other, decoder))),
    };
    let decoder = (decoder.buffered() > 0).then(|| Box::new(decoder));
    // Nothing queued is written for a while: the queues' room goes back.
    session.conn.shed();
    let bus = Arc::clone(&session.bus);
    // Where resumed sessions run: the runtime this one runs on.
    bus.runtime.get_or_init(tokio::runtime::Handle::current);
    bus.metrics.parked.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry {
        parked: Mutex::new(Some(Parked {
            session,
            tcp,
            decoder,
        })),
        missed: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&entry));
    let mut cx = Context::from_waker(&waker);
    let ready = {
        let guard = entry.parked.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(parked) => {
                // Both are registered whatever the first says: a wake may come
                // from either.
                let readable = parked.tcp.poll_read_ready(&mut cx).is_ready();
                let signalled = parked.session.conn.notify.register(&mut cx);
                readable || signalled
            }
            None => true,
        }
    };
    if ready || entry.missed.swap(false, Ordering::AcqRel) {
        // Whoever takes it serves it: this task, or a wake that came meanwhile.
        let parked = entry
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if parked.is_some() {
            bus.metrics.parked.fetch_sub(1, Ordering::Relaxed);
        }
        return parked.map(Parked::unpark);
    }
    None
}

/// Serves a woken session in a task of its own again.
fn resume(parked: Parked) {
    let bus = Arc::clone(&parked.session.bus);
    bus.metrics.parked.fetch_sub(1, Ordering::Relaxed);
    match bus.runtime.get() {
        Some(runtime) => {
            let (session, wire) = parked.unpark();
            runtime.spawn(super::serve(session, wire));
        }
        // Unreachable: the runtime is set before the first entry exists. Dropping
        // the session would lose the connection silently; ending it says so.
        None => parked.session.end(),
    }
}
