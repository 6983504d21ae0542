//! The WebSocket wire format (RFC 6455), server side: the opening handshake's
//! accept key, an incremental frame decoder and the frame encoder.
//!
//! Colony keeps its own codec rather than a general WebSocket crate so that an idle
//! connection parks no buffer at all: the decoder holds bytes only while a frame is
//! incomplete, and gives the memory back as soon as it is whole. Extensions
//! (compression) are not negotiated, so reserved bits must be zero.

use base64::Engine;
use sha1::{Digest, Sha1};

const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(client_key.trim().as_bytes());
    hasher.update(HANDSHAKE_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes the node sends.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED: u16 = 1003;
pub const CLOSE_BAD_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// One complete thing the peer sent, as [`Decoded::events`] lends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// A whole text message, checked to be UTF-8.
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

/// What the decoder completed, in order: every text message's payload one after
/// another in one string, the other payloads in one buffer. One allocation for
/// everything a read brings, instead of one per message (a publish's largest cost
/// after its JSON); the session reuses it read after read.
#[derive(Debug, Default)]
pub struct Decoded {
    text: String,
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    /// Where each payload is unmasked before it is copied to its place.
    unmasked: Vec<u8>,
}

#[derive(Debug)]
enum Piece {
    Text(std::ops::Range<usize>),
    Binary(std::ops::Range<usize>),
    Ping(std::ops::Range<usize>),
    Pong,
    Close(Option<u16>),
}

impl Decoded {
    /// The events, in the order their messages arrived.
    pub fn events(&self) -> impl Iterator<Item = WsEvent<'_>> {
        self.pieces.iter().map(|piece| match piece {
            Piece::Text(range) => WsEvent::Text(&self.text[range.clone()]),
            Piece::Binary(range) => WsEvent::Binary(&self.bytes[range.clone()]),
            Piece::Ping(range) => WsEvent::Ping(&self.bytes[range.clone()]),
            Piece::Pong => WsEvent::Pong,
            Piece::Close(code) => WsEvent::Close(*code),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Forgets the events, keeping the room they took.
    pub fn clear(&mut self) {
        self.text.clear();
        self.bytes.clear();
        self.pieces.clear();
    }

    /// Bytes of room held.
    pub fn capacity(&self) -> usize {
        self.text.capacity()
            + self.bytes.capacity()
            + self.unmasked.capacity()
            + self.pieces.capacity() * std::mem::size_of::<Piece>()
    }

    /// Appends a text message (unmasked), checked to be UTF-8.
    fn push_text(&mut self, payload: &[u8]) -> Result<(), WsError> {
        let text = std::str::from_utf8(payload).map_err(|_| WsError::BadUtf8)?;
        let start = self.text.len();
        self.text.push_str(text);
        self.pieces.push(Piece::Text(start..self.text.len()));
        Ok(())
    }

    /// Appends a binary message or a ping's payload (unmasked).
    fn push_bytes(&mut self, payload: &[u8], ping: bool) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        let range = start..self.bytes.len();
        self.pieces.push(if ping {
            Piece::Ping(range)
        } else {
            Piece::Binary(range)
        });
    }
}

/// Why the connection must close; [`WsError::close_code`] is what to tell the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("message of {size} bytes is larger than the {max} bytes allowed")]
    TooBig { size: u64, max: usize },
    #[error("text message is not valid UTF-8")]
    BadUtf8,
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            WsError::TooBig { .. } => CLOSE_TOO_BIG,
            WsError::BadUtf8 => CLOSE_BAD_DATA,
        }
    }
}

/// Turns the bytes a client sends, in pieces of any size, into [`WsEvent`]s.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The start of a frame that has not arrived whole. Empty (and unallocated)
    /// between frames.
    partial: Vec<u8>,
    /// A fragmented message being assembled: its opcode and payload so far.
    /// Boxed: most connections never see a fragmented message, and the decoder
    /// lives in every connection's state.
    fragments: Option<Box<(u8, Vec<u8>)>>,
}

enum Parsed {
    /// Needs more bytes.
    Incomplete,
    /// A frame of `consumed` bytes; its payload, still masked, is
    /// `input[payload]`.
    Frame {
        consumed: usize,
        fin: bool,
        opcode: u8,
        mask: [u8; 4],
        payload: std::ops::Range<usize>,
    },
}

impl Decoder {
    /// `max_message` bounds a frame's payload and an assembled message alike.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: Vec::new(),
            fragments: None,
        }
    }

    /// Bytes held for an incomplete frame or message.
    pub fn buffered(&self) -> usize {
        self.partial.capacity()
            + self
                .fragments
                .as_ref()
                .map_or(0, |fragments| fragments.1.capacity())
    }

    /// Consumes `input`, appending every event completed by it to `events`.
    pub fn feed(&mut self, input: &[u8], events: &mut Decoded) -> Result<(), WsError> {
        if self.partial.is_empty() {
            let consumed = self.parse_all(input, events)?;
            if consumed < input.len() {
                self.partial.extend_from_slice(&input[consumed..]);
            }
        } else {
            self.partial.extend_from_slice(input);
            let partial = std::mem::take(&mut self.partial);
            let consumed = self.parse_all(&partial, events)?;
            if consumed < partial.len() {
                let mut rest = partial;
                rest.drain(..consumed);
                self.partial = rest;
            }
            // else: `partial` is dropped, so nothing stays allocated.
        }
        Ok(())
    }

    fn parse_all(&mut self, mut input: &[u8], events: &mut Decoded) -> Result<usize, WsError> {
        let mut consumed_total = 0;
        // Each payload is unmasked here, then copied to where its event keeps it.
        let mut unmasked = std::mem::take(&mut events.unmasked);
        loop {
            match self.parse_frame(input)? {
                Parsed::Incomplete => {
                    events.unmasked = unmasked;
                    return Ok(consumed_total);
                }
                Parsed::Frame {
                    consumed,
                    fin,
                    opcode,
                    mask,
                    payload,
                } => {
                    unmasked.clear();
                    unmasked.extend_from_slice(&input[payload]);
                    unmask(&mut unmasked, mask);
                    consumed_total += consumed;
                    input = &input[consumed..];
                    self.on_frame(fin, opcode, &unmasked, events)?;
                }
            }
        }
    }

    fn parse_frame(&self, input: &[u8]) -> Result<Parsed, WsError> {
        if input.len() < 2 {
            return Ok(Parsed::Incomplete);
        }
        let fin = input[0] & 0x80 != 0;
        if input[0] & 0x70 != 0 {
            return Err(WsError::Protocol(
                "reserved bits set (no extension was negotiated)",
            ));
        }
        let opcode = input[0] & 0x0F;
        let control = opcode & 0x08 != 0;
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        if input[1] & 0x80 == 0 {
            return Err(WsError::Protocol("client frames must be masked"));
        }
        let (length, mut at) = match input[1] & 0x7F {
            126 => {
                if input.len() < 4 {
                    return Ok(Parsed::Incomplete);
                }
                (u16::from_be_bytes([input[2], input[3]]) as u64, 4)
            }
            127 => {
                if input.len() < 10 {
                    return Ok(Parsed::Incomplete);
                }
                let length = u64::from_be_bytes(input[2..10].try_into().expect("8 bytes"));
                if length >> 63 != 0 {
                    return Err(WsError::Protocol("payload length has its top bit set"));
                }
                (length, 10)
            }
            short => (short as u64, 2),
        };
        if control && (!fin || length > 125) {
            return Err(WsError::Protocol(
                "control frames must be whole and at most 125 bytes",
            ));
        }
        let assembled = self
            .fragments
            .as_ref()
            .map_or(0, |fragments| fragments.1.len()) as u64;
        if length
            + if opcode == OP_CONTINUATION {
                assembled
            } else {
                0
            }
            > self.max_message as u64
        {
            return Err(WsError::TooBig {
                size: length + assembled,
                max: self.max_message,
            });
        }
        if input.len() < at + 4 {
            return Ok(Parsed::Incomplete);
        }
        let mask = [input[at], input[at + 1], input[at + 2], input[at + 3]];
        at += 4;
        let end = at + length as usize;
        if input.len() < end {
            return Ok(Parsed::Incomplete);
        }
        Ok(Parsed::Frame {
            consumed: end,
            fin,
            opcode,
            mask,
            payload: at..end,
        })
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        events: &mut Decoded,
    ) -> Result<(), WsError> {
        match opcode {
            OP_PING => events.push_bytes(payload, true),
            OP_PONG => events.pieces.push(Piece::Pong),
            OP_CLOSE => {
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(WsError::Protocol("close frame with a one-byte body")),
                    _ => {
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(WsError::BadUtf8);
                        }
                        Some(u16::from_be_bytes([payload[0], payload[1]]))
                    }
                };
                events.pieces.push(Piece::Close(code));
            }
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(WsError::Protocol(
                        "a new message started before the fragmented one ended",
                    ));
                }
                if fin {
                    complete(opcode, payload, events)?;
                } else {
                    self.fragments = Some(Box::new((opcode, payload.to_vec())));
                }
            }
            OP_CONTINUATION => {
                let Some((first, mut assembled)) = self.fragments.take().map(|boxed| *boxed) else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                assembled.extend_from_slice(payload);
                if fin {
                    complete(first, &assembled, events)?;
                } else {
                    self.fragments = Some(Box::new((first, assembled)));
                }
            }
            _ => unreachable!("opcodes are checked when parsed"),
        }
        Ok(())
    }
}

fn complete(opcode: u8, payload: &[u8], events: &mut Decoded) -> Result<(), WsError> {
    if opcode == OP_TEXT {
        events.push_text(payload)
    } else {
        events.push_bytes(payload, false);
        Ok(())
    }
}

/// XORs `payload` (from its first byte) with the client's mask, eight bytes at a
/// time (byte by byte it was half of what a publish cost to decode).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let whole = payload.len() / 8 * 8;
    let (words, rest) = payload.split_at_mut(whole);
    for chunk in words.chunks_exact_mut(8) {
        let value = u64::from_ne_bytes(chunk.try_into().expect("eight bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // `whole` is a multiple of 4: the mask's phase starts again at 0.
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The longest header of an unmasked server frame.
pub const HEADER_BYTES_MAX: usize = 10;

/// Appends the header of an unmasked server frame carrying `length` bytes.
pub fn encode_header(opcode: u8, length: usize, out: &mut Vec<u8>) {
    // Made on the stack and appended at once: one capacity check, not three.
    let mut header = [0u8; HEADER_BYTES_MAX];
    header[0] = 0x80 | opcode;
    let used = if length < 126 {
        header[1] = length as u8;
        2
    } else if length <= u16::MAX as usize {
        header[1] = 126;
        header[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(length as u64).to_be_bytes());
        10
    };
    // Each length a constant: a copy of two, four or ten bytes, not a call to memcpy.
    match used {
        2 => out.extend_from_slice(&header[..2]),
        4 => out.extend_from_slice(&header[..4]),
        _ => out.extend_from_slice(&header),
    }
}

/// Appends a whole unmasked server frame.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    encode_header(opcode, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a close frame with a code and a reason (cut to fit 125 bytes).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OP_CLOSE, &payload, out);
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
