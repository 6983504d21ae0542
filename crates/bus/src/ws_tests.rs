//! Tests of the WebSocket codec: unmasking, decoding split anywhere, refusals, encoding.

use super::*;

#[test]
fn unmasking_by_words_is_unmasking_by_bytes() {
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    for length in [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 200, 1001] {
        let plain: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
        let mut masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        unmask(&mut masked, mask);
        assert_eq!(masked, plain, "{length} bytes");
    }
}

/// A client frame, masked with `mask`.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let length = payload.len();
    if length < 126 {
        out.push(0x80 | length as u8);
    } else if length <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(length as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    unmask(&mut body, mask);
    out.extend_from_slice(&body);
    out
}

#[test]
fn accept_key_matches_the_rfc_example() {
    // RFC 6455, section 1.3.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn every_split_point_gives_the_same_events() {
    let long = "x".repeat(300);
    let huge = "y".repeat(70_000);
    let mut stream = Vec::new();
    stream.extend(client_frame(
        true,
        OP_TEXT,
        br#"{"op":"ping"}"#,
        [1, 2, 3, 4],
    ));
    stream.extend(client_frame(false, OP_TEXT, b"{\"op\":", [9, 8, 7, 6]));
    stream.extend(client_frame(true, OP_PING, b"hi", [0, 0, 0, 0]));
    stream.extend(client_frame(
        true,
        OP_CONTINUATION,
        b"\"pong\"}",
        [5, 5, 5, 5],
    ));
    stream.extend(client_frame(true, OP_TEXT, long.as_bytes(), [7, 1, 7, 1]));
    stream.extend(client_frame(true, OP_TEXT, "é€".as_bytes(), [2, 7, 1, 8]));
    stream.extend(client_frame(true, OP_CLOSE, &[0x03, 0xE8], [1, 1, 1, 1]));
    let expected = vec![
        WsEvent::Text(r#"{"op":"ping"}"#),
        WsEvent::Ping(b"hi"),
        WsEvent::Text(r#"{"op":"pong"}"#),
        WsEvent::Text(&long),
        WsEvent::Text("é€"),
        WsEvent::Close(Some(1000)),
    ];
    for split in 0..=stream.len() {
        let mut decoder = Decoder::new(1 << 20);
        let mut events = Decoded::default();
        decoder.feed(&stream[..split], &mut events).unwrap();
        decoder.feed(&stream[split..], &mut events).unwrap();
        assert_eq!(
            events.events().collect::<Vec<_>>(),
            expected,
            "split at byte {split}"
        );
        assert_eq!(
            decoder.buffered(),
            0,
            "nothing stays buffered (split {split})"
        );
    }
    // A frame with a 64-bit length: every split in its header and around its end.
    let big = client_frame(true, OP_TEXT, huge.as_bytes(), [3, 1, 4, 1]);
    let splits = (0..20)
        .chain(big.len() - 3..=big.len())
        .chain([big.len() / 2]);
    for split in splits {
        let mut decoder = Decoder::new(1 << 20);
        let mut events = Decoded::default();
        decoder.feed(&big[..split], &mut events).unwrap();
        decoder.feed(&big[split..], &mut events).unwrap();
        assert_eq!(
            events.events().collect::<Vec<_>>(),
            vec![WsEvent::Text(&huge)],
            "split at byte {split}"
        );
    }
    // And one byte at a time.
    let mut decoder = Decoder::new(1 << 20);
    let mut events = Decoded::default();
    for byte in &stream {
        decoder
            .feed(std::slice::from_ref(byte), &mut events)
            .unwrap();
    }
    assert_eq!(events.events().collect::<Vec<_>>(), expected);
    events.clear();
    assert!(events.is_empty());
    assert!(events.capacity() > 0, "the room stays for the next read");
}

#[test]
fn malformed_frames_are_refused_with_the_right_close_code() {
    let mut unmasked = client_frame(true, OP_TEXT, b"hi", [0; 4]);
    unmasked[1] &= 0x7F;
    unmasked.drain(2..6);
    let mut reserved = client_frame(true, OP_TEXT, b"hi", [1; 4]);
    reserved[0] |= 0x40;
    let mut top_bit = vec![0x81, 0x80 | 127];
    top_bit.extend_from_slice(&u64::MAX.to_be_bytes());
    let table: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, CLOSE_PROTOCOL_ERROR),
        ("reserved bits", reserved, CLOSE_PROTOCOL_ERROR),
        (
            "unknown opcode",
            client_frame(true, 0x3, b"", [1; 4]),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "fragmented ping",
            client_frame(false, OP_PING, b"", [1; 4]),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "long ping",
            client_frame(true, OP_PING, &[0; 126], [1; 4]),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "stray continuation",
            client_frame(true, OP_CONTINUATION, b"x", [1; 4]),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "bad utf-8",
            client_frame(true, OP_TEXT, &[0xC3, 0x28], [1; 4]),
            CLOSE_BAD_DATA,
        ),
        (
            "too big",
            client_frame(true, OP_TEXT, &[b'a'; 2000], [1; 4]),
            CLOSE_TOO_BIG,
        ),
        ("length top bit", top_bit, CLOSE_PROTOCOL_ERROR),
        (
            "one-byte close",
            client_frame(true, OP_CLOSE, &[3], [1; 4]),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "interleaved message",
            [
                client_frame(false, OP_TEXT, b"a", [1; 4]),
                client_frame(true, OP_TEXT, b"b", [1; 4]),
            ]
            .concat(),
            CLOSE_PROTOCOL_ERROR,
        ),
        (
            "fragments too big",
            [
                client_frame(false, OP_TEXT, &[b'a'; 600], [1; 4]),
                client_frame(true, OP_CONTINUATION, &[b'a'; 600], [1; 4]),
            ]
            .concat(),
            CLOSE_TOO_BIG,
        ),
    ];
    for (name, bytes, code) in table {
        let mut decoder = Decoder::new(1024);
        let error = decoder
            .feed(&bytes, &mut Decoded::default())
            .expect_err(name);
        assert_eq!(error.close_code(), code, "{name}: {error}");
    }
}

#[test]
fn a_too_big_frame_is_refused_from_its_header_alone() {
    let mut decoder = Decoder::new(1024);
    let frame = client_frame(true, OP_TEXT, &[b'a'; 5000], [1; 4]);
    let error = decoder
        .feed(&frame[..8], &mut Decoded::default())
        .unwrap_err();
    assert!(matches!(
        error,
        WsError::TooBig {
            size: 5000,
            max: 1024
        }
    ));
}

#[test]
fn server_frames_encode_every_length_form() {
    for length in [0usize, 125, 126, 65_535, 65_536] {
        let mut out = Vec::new();
        encode_frame(OP_TEXT, &vec![b'z'; length], &mut out);
        let header = match length {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        assert_eq!(out.len(), header + length);
        assert_eq!(out[0], 0x81);
    }
    let mut out = Vec::new();
    encode_close(CLOSE_POLICY, &"é".repeat(100), &mut out);
    assert!(out.len() <= 127);
    assert!(std::str::from_utf8(&out[4..]).is_ok());
}
