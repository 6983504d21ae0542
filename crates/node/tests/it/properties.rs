//! Property tests: random and mutated input never panics a parser, and never makes
//! the node answer 5xx. The WebSocket codec, the SSE reader, the subject trie (checked
//! against the kernel's reference matcher), every TOML parser, and every JSON body.

use std::path::Path;

use colony_node::bus::subject::Trie;
use colony_node::bus::ws::{encode_frame, Decoded, Decoder, WsEvent};
use colony_node::gateway::sse::{ToAnthropic, Watch};
use proptest::prelude::*;

/// Bytes of `base` with random flips, cuts and insertions.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 0..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len());
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at.max(1)),
            }
        }
        bytes
    })
}

/// A masked client frame, as browsers and agents send them.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(opcode, payload, &mut out);
    // Set the mask bit and insert the key after the length.
    out[1] |= 0x80;
    let header_len = match out[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let mut framed = out[..header_len].to_vec();
    framed.extend_from_slice(&mask);
    framed.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    framed
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/genesis")
            .join(name),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_websocket_decoder_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
        let mut decoder = Decoder::new(1 << 16);
        let mut events = Decoded::default();
        let split = split.min(bytes.len());
        if decoder.feed(&bytes[..split], &mut events).is_ok() {
            let _ = decoder.feed(&bytes[split..], &mut events);
        }
    }

    #[test]
    fn the_websocket_decoder_reads_valid_frames_split_anywhere(payload in "[ -~]{0,300}", mask in any::<[u8; 4]>(), split in 0usize..400) {
        let frame = client_frame(0x1, payload.as_bytes(), mask);
        let split = split.min(frame.len());
        let mut decoder = Decoder::new(1 << 16);
        let mut events = Decoded::default();
        decoder.feed(&frame[..split], &mut events).unwrap();
        decoder.feed(&frame[split..], &mut events).unwrap();
        let events: Vec<WsEvent> = events.events().collect();
        prop_assert_eq!(events.len(), 1);
        match events[0] {
            WsEvent::Text(text) => prop_assert_eq!(text, payload.as_str()),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn the_websocket_decoder_survives_mutated_frames(frame in mutated(client_frame(0x1, br#"{"op":"pub","subject":"a.b","data":{}}"#, [1, 2, 3, 4]))) {
        let mut decoder = Decoder::new(64);
        let mut events = Decoded::default();
        let _ = decoder.feed(&frame, &mut events);
    }

    #[test]
    fn the_sse_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), split in 0usize..600) {
        let mut watch = Watch::default();
        let split = split.min(bytes.len());
        let mut to = ToAnthropic::new("m");
        let mut out = String::new();
        let mut payloads = watch.feed(&bytes[..split]);
        payloads.extend(watch.feed(&bytes[split..]));
        for data in payloads {
            if let colony_node::gateway::sse::Data::Json(chunk) = data {
                to.chunk(&chunk, &mut out);
            }
        }
        let _ = watch.tokens(100);
    }

    #[test]
    fn the_sse_reader_survives_mutated_streams(bytes in mutated(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n".to_vec()
    )) {
        let mut watch = Watch::default();
        let mut to = ToAnthropic::new("m");
        let mut out = String::new();
        for data in watch.feed(&bytes) {
            if let colony_node::gateway::sse::Data::Json(chunk) = data {
                to.chunk(&chunk, &mut out);
            }
        }
        let _ = watch.tokens(100);
    }

    #[test]
    fn the_subject_trie_agrees_with_the_reference_matcher(
        patterns in proptest::collection::vec("(a|b|\\*)(\\.(a|b|c|\\*)){0,3}(\\.>)?|>", 1..12),
        subjects in proptest::collection::vec("(a|b|c)(\\.(a|b|c)){0,4}", 1..12),
        removed in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let mut trie = Trie::new();
        let mut kept = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            prop_assert!(colony_kernel::subject::check_pattern(pattern).is_ok(), "{}", pattern);
            trie.insert(pattern, index);
            kept.push(index);
        }
        for (index, pattern) in patterns.iter().enumerate() {
            if removed[index] {
                prop_assert!(trie.remove(pattern, |v| *v == index).is_some());
                kept.retain(|k| *k != index);
            }
        }
        for subject in &subjects {
            let mut found = Vec::new();
            trie.matches(subject, &mut found);
            found.sort_unstable();
            let mut expected: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|index| colony_kernel::subject::matches(&patterns[*index], subject))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(found, expected, "subject {}", subject);
        }
    }

    #[test]
    fn the_toml_parsers_never_panic_on_mutated_files(which in 0usize..8, seed_edits in mutated(Vec::new()), text in ".{0,200}") {
        let files = ["limits.toml", "quotas.toml", "governance.toml", "tasks.toml", "providers.toml", "bus.toml", "anomaly.toml", "limits.toml"];
        let mut base = shipped(files[which]).into_bytes();
        // Mutate the shipped file, or replace it by random text.
        for (i, byte) in seed_edits.iter().enumerate() {
            let at = (i * 7919 + *byte as usize) % base.len().max(1);
            base[at] = *byte;
        }
        let candidates = [String::from_utf8_lossy(&base).into_owned(), text];
        for candidate in &candidates {
            let file = Path::new(files[which]);
            let _ = colony_node::genesis::parse_limits(file, candidate);
            let _ = colony_node::genesis::parse_quotas(file, candidate);
            let _ = colony_node::genesis::parse_governance(file, candidate);
            let _ = colony_node::genesis::parse_tasks(file, candidate);
            let _ = colony_node::genesis::parse_supervisor(file, candidate);
            let _ = colony_node::bus::BusConfig::parse(file, candidate);
            let _ = colony_node::gateway::GatewayConfig::parse(file, candidate, &|_| None);
            let _ = colony_node::genesis::parse_anomaly(file, candidate);
            let _ = colony_node::genesis::parse_usd(candidate);
        }
    }
}
