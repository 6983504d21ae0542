//! The socket side of a session: reading and decoding what arrives, writing what is
//! queued, and waiting for whichever of those (or the connection's signal, or the
//! ack timer) comes first.
//!
//! One `poll` looks at every source in turn instead of a `select!` of futures: the
//! session owns its socket whole (no split halves sharing it through a lock), and
//! an idle connection's state holds no future for each thing it waits on.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::Signal;
use crate::ws::{Decoded, Decoder, WsError};

const SCRATCH_BYTES: usize = 64 << 10;
/// Most room a thread keeps for decoding between reads (a read brings at most
/// `SCRATCH_BYTES`; a larger message, assembled over many reads, gives its room back).
const DECODED_KEPT_BYTES: usize = 4 * SCRATCH_BYTES;

/// Emptied write buffers a runtime thread keeps for its sessions' next batches.
const WRITE_BUFFERS_KEPT: usize = 8;
/// The largest write buffer a thread keeps (a batch is about `write_batch_bytes`).
const WRITE_BUFFER_KEPT_BYTES: usize = 256 << 10;

thread_local! {
    /// Write buffers sessions of this thread have emptied. A session holds one only
    /// while it has something to write (an idle one holds none), and taking it from
    /// here rather than from the allocator spares a malloc and a free of up to
    /// 68 KiB a batch (freeing a chunk that large also made glibc consolidate its
    /// free lists every time).
    static WRITE_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// What a read brings lands here first (one buffer per runtime thread, not one
    /// per connection), then the decoder keeps only a frame that has not arrived whole.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
    /// What the thread's last read decoded into, lent to the session that handles it
    /// and given back ([`give_back`]): no allocation per read or per message.
    static DECODED: RefCell<Option<Decoded>> = const { RefCell::new(None) };
}

/// An empty [`Decoded`] to decode a read into: the thread's, or a new one.
pub(super) fn lend() -> Decoded {
    DECODED.with_borrow_mut(Option::take).unwrap_or_default()
}

/// Gives a [`Decoded`] back to the thread once its events are handled.
pub(super) fn give_back(mut decoded: Decoded) {
    if decoded.capacity() <= DECODED_KEPT_BYTES {
        decoded.clear();
        DECODED.set(Some(decoded));
    }
}

/// An empty buffer to gather a batch of frames into: one the thread kept, or a new
/// one.
pub(super) fn write_buffer() -> Vec<u8> {
    WRITE_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Gives a written buffer back to the thread (unless it holds enough already, or
/// the buffer grew past what is kept).
pub(super) fn recycle(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > WRITE_BUFFER_KEPT_BYTES {
        return;
    }
    buffer.clear();
    WRITE_BUFFERS.with_borrow_mut(|kept| {
        if kept.len() < WRITE_BUFFERS_KEPT {
            kept.push(buffer);
        }
    });
}

/// What a session speaks over.
pub enum Socket {
    /// A plain TCP connection: while idle, the session waits for it without a task
    /// of its own (see [`super::park`]).
    Tcp(TcpStream),
    /// Anything else (TLS, through the HTTP server's transport).
    Other(Box<dyn Transport>),
}

/// A byte stream a session can speak over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Socket::Other(other) => Pin::new(other).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Socket::Other(other) => Pin::new(other).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Socket::Other(other) => Pin::new(other).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Socket::Other(other) => Pin::new(other).poll_shutdown(cx),
        }
    }
}

/// Why reading stopped.
pub(super) enum ReadEnd {
    Eof,
    Io(std::io::Error),
    Ws(WsError),
}

/// What woke the session.
pub(super) enum Step {
    Read(Result<Decoded, ReadEnd>),
    Wrote(std::io::Result<usize>),
    Signalled,
    Timer,
    /// Nothing is ready and nothing happened since the session (re)started: a new
    /// connection whose client has not spoken yet, or a parked one woken for
    /// nothing. It parks at once rather than after `PARK_AFTER`.
    Idle,
}

/// What the timer's ringing meant.
pub(super) enum Rang {
    /// A stream consumer's ack deadline.
    Ack,
    /// Parking time, and something happened since it was set: set again.
    Busy,
    /// Parking time, and nothing happened: the connection parks (a plain one) or
    /// gives back its queues' memory and waits with no timer (one over TLS, which
    /// cannot park).
    Quiet,
}

/// A connection's socket and what is in flight on it.
pub(super) struct Wire {
    pub(super) io: Socket,
    pub(super) decoder: Decoder,
    /// Encoded frames being written; `written` of them are out.
    pub(super) out: Vec<u8>,
    pub(super) written: usize,
    /// A close frame is queued: nothing more is read or taken from the queue.
    pub(super) closing: bool,
    /// Alternates which of reading and writing is looked at first, so that neither a
    /// client that never stops sending nor one that never stops reading starves the
    /// other direction.
    reads_first: bool,
    /// The timer: a stream consumer's next ack deadline while one has something
    /// unacknowledged; otherwise when the connection goes quiet (see [`Rang::Quiet`]).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer is the parking one.
    parking: bool,
    /// Nothing happened since the parking timer was set.
    quiet: bool,
    /// Nothing happened since the session (re)started or, on a connection that
    /// cannot park, since it last went quiet: no parking timer is set for it.
    fresh: bool,
}

/// How long a connection on which nothing happens keeps its task before it parks.
pub(super) const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

impl Wire {
    pub(super) fn new(io: Socket, decoder: Decoder) -> Wire {
        Wire {
            io,
            decoder,
            out: Vec::new(),
            written: 0,
            closing: false,
            reads_first: true,
            timer: None,
            parking: false,
            quiet: false,
            fresh: true,
        }
    }

    /// The socket and the decoder, for a connection that parks (everything else is
    /// empty then).
    pub(super) fn into_parts(self) -> (Socket, Decoder) {
        (self.io, self.decoder)
    }

    /// Whether everything taken from the queue is written.
    pub(super) fn flushed(&self) -> bool {
        self.written == self.out.len()
    }

    /// Sets the timer for the session's next ack deadline (`Some`), or, when it has
    /// none, for going quiet (unless closing).
    pub(super) fn set_timer(&mut self, ack_deadline: Option<Instant>) {
        let at = match ack_deadline {
            Some(at) => {
                self.parking = false;
                at
            }
            None if !self.closing => {
                // A fresh session parks as soon as nothing is ready (`Step::Idle`).
                if self.parking || self.fresh {
                    return;
                }
                self.parking = true;
                self.quiet = true;
                Instant::now() + PARK_AFTER
            }
            None => {
                self.parking = false;
                self.timer = None;
                return;
            }
        };
        match &mut self.timer {
            Some(sleep) if sleep.deadline() == at => {}
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Plain TCP and not closing: a connection that parks when it is quiet.
    pub(super) fn parkable(&self) -> bool {
        matches!(self.io, Socket::Tcp(_)) && !self.closing
    }

    /// Whether the connection could park now: parkable, everything written.
    fn may_park(&self) -> bool {
        self.parkable() && self.flushed()
    }

    /// The timer is set for an ack deadline.
    fn acks_due(&self) -> bool {
        self.timer.is_some() && !self.parking
    }

    /// The timer rang: for an ack deadline, or for parking (quiet since it was set:
    /// the connection parks; busy: it is set again).
    pub(super) fn rang(&mut self) -> Rang {
        if !self.parking {
            return Rang::Ack;
        }
        if self.quiet && self.flushed() && !self.closing {
            self.timer = None;
            self.parking = false;
            // One that cannot park stays without a timer until something happens.
            self.fresh = true;
            return Rang::Quiet;
        }
        self.quiet = true;
        if let Some(sleep) = &mut self.timer {
            sleep.as_mut().reset(Instant::now() + PARK_AFTER);
        }
        Rang::Busy
    }

    /// The next thing that happened on the connection.
    pub(super) fn poll_step(&mut self, cx: &mut Context<'_>, signal: &Signal) -> Poll<Step> {
        match self.poll_sources(cx, signal) {
            Poll::Ready(step) => {
                if let Step::Read(_) | Step::Wrote(_) | Step::Signalled = step {
                    self.quiet = false;
                }
                self.fresh = false;
                Poll::Ready(step)
            }
            Poll::Pending if self.fresh && self.may_park() && !self.acks_due() => {
                self.fresh = false;
                Poll::Ready(Step::Idle)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_sources(&mut self, cx: &mut Context<'_>, signal: &Signal) -> Poll<Step> {
        self.reads_first = !self.reads_first;
        if self.reads_first {
            if let Poll::Ready(read) = self.poll_read(cx) {
                return Poll::Ready(Step::Read(read));
            }
        }
        if !self.flushed() {
            let unwritten = &self.out[self.written..];
            if let Poll::Ready(wrote) = Pin::new(&mut self.io).poll_write(cx, unwritten) {
                return Poll::Ready(Step::Wrote(wrote));
            }
        } else if !self.closing && signal.poll(cx).is_ready() {
            return Poll::Ready(Step::Signalled);
        }
        if !self.reads_first {
            if let Poll::Ready(read) = self.poll_read(cx) {
                return Poll::Ready(Step::Read(read));
            }
        }
        if let Some(timer) = &mut self.timer {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Timer);
            }
        }
        Poll::Pending
    }

    /// Reads what the socket has into the thread's scratch buffer and decodes it.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Decoded, ReadEnd>> {
        if self.closing {
            return Poll::Pending;
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(error)) => Poll::Ready(Err(ReadEnd::Io(error))),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(ReadEnd::Eof)),
                Poll::Ready(Ok(())) => {
                    let mut events = lend();
                    Poll::Ready(match self.decoder.feed(buf.filled(), &mut events) {
                        Ok(()) => Ok(events),
                        Err(error) => {
                            give_back(events);
                            Err(ReadEnd::Ws(error))
                        }
                    })
                }
            }
        })
    }
}
