//! The common publish frame read without serde's field matching:
//! `{"op":"pub","subject":"<subject>","data":<json>}`, exactly that layout, the
//! subject without an escape or a control character. It is what most frames on a
//! busy bus are, and serde's derive spends most of a publish's parse matching
//! twenty field names. Anything else (another op, another field, another order,
//! whitespace, an escape) is left to serde, and so is `data`'s check: it is read by
//! serde_json as a raw value, which also refuses anything after it. What this
//! accepts, serde reads as the same frame (a property test checks it).

use serde_json::value::RawValue;

use super::frame::{Frame, Text};

const HEAD: &str = r#"{"op":"pub","subject":""#;
const DATA: &str = r#"","data":"#;

/// The frame, when `text` is a publish frame of the common layout.
pub(super) fn publish(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix(HEAD)?;
    let end = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    let (subject, after) = rest.split_at(end);
    let data = after.strip_prefix(DATA)?.strip_suffix('}')?;
    // serde_json reads the value and refuses anything after it.
    let data: &RawValue = serde_json::from_str(data).ok()?;
    Some(Frame::publish(Text::borrowed(subject), data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    /// What matters of a frame, to compare the two readings.
    fn fields(frame: &Frame) -> (String, Option<String>, Option<String>, bool) {
        let others = frame.id.is_some()
            || frame.sid.is_some()
            || frame.queue.is_some()
            || frame.stream.is_some()
            || frame.from_seq.is_some()
            || frame.from_time.is_some()
            || frame.backpressure.is_some()
            || frame.priority.is_some()
            || frame.headers.is_some()
            || frame.reply_to.is_some()
            || frame.seq.is_some()
            || frame.capabilities.is_some()
            || frame.model.is_some()
            || frame.profile.is_some()
            || frame.worker.is_some()
            || frame.justification.is_some();
        (
            frame.op.to_string(),
            frame.subject.as_deref().map(str::to_string),
            frame.data.map(|d| d.get().to_string()),
            others,
        )
    }

    #[test]
    fn the_common_layout_is_read_and_the_rest_left_to_serde() {
        let frame = publish(r#"{"op":"pub","subject":"orders.new","data":{"n":[1,2]}}"#).unwrap();
        assert_eq!(&*frame.op, "pub");
        assert_eq!(frame.subject.as_deref(), Some("orders.new"));
        assert_eq!(frame.data.unwrap().get(), r#"{"n":[1,2]}"#);
        assert!(matches!(
            frame.subject.as_ref().unwrap().0,
            Cow::Borrowed(_)
        ));
        for other in [
            r#"{"op":"pub","subject":"a\u002eb","data":1}"#,
            r#"{"op":"pub","subject":"a","data":1,"priority":"high"}"#,
            r#"{"op":"pub","subject":"a","data":1}  "#,
            r#"{"op":"pub","subject":"a","data":1} x"#,
            r#"{"op":"pub","subject":"a","data":}"#,
            r#"{"op":"pub","subject":"a","data":"x"y"}"#,
            r#"{"op":"pub", "subject":"a","data":1}"#,
            r#"{"op":"sub","subject":"a","data":1}"#,
            "{\"op\":\"pub\",\"subject\":\"a\tb\",\"data\":1}",
            r#"{"op":"pub","subject":"a","data":1"#,
        ] {
            assert!(publish(other).is_none(), "{other}");
        }
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z.>*]{0,12}",
            Just("\\".to_string()),
            Just("\\\"".to_string()),
            Just("\"".to_string()),
            Just("\\u002e".to_string()),
            Just("\t".to_string()),
            Just(" ".to_string()),
            Just("}".to_string()),
            Just(",\"priority\":\"high\"".to_string()),
            Just("{\"a\":[1,\"b\"]}".to_string()),
            "[0-9]{1,4}",
            "\"[a-z ]{0,8}\"",
        ]
    }

    proptest! {
        /// Whatever this reads, serde reads the same; whatever serde refuses, this
        /// refuses too.
        #[test]
        fn it_agrees_with_serde(
            subject in proptest::collection::vec(piece(), 0..4),
            data in proptest::collection::vec(piece(), 0..4),
            tail in proptest::collection::vec(piece(), 0..2),
        ) {
            let text = format!(
                "{HEAD}{}{DATA}{}}}{}",
                subject.concat(),
                data.concat(),
                tail.concat()
            );
            let by_serde = serde_json::from_str::<Frame>(&text);
            if let Some(fast) = publish(&text) {
                let by_serde = by_serde.expect("serde reads what the fast path reads");
                prop_assert_eq!(fields(&fast), fields(&by_serde));
            }
        }
    }
}
