//! The client's frames as the session reads them, and the `err` frame's error.

use std::borrow::Cow;

use colony_kernel::Priority;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::SID_BYTES_MAX;

/// A client frame: every field any op uses; each op checks the ones it needs.
#[derive(Deserialize)]
pub(super) struct Frame<'a> {
    #[serde(borrow)]
    pub(super) op: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) sid: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) subject: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) queue: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) stream: Option<Text<'a>>,
    pub(super) from_seq: Option<u64>,
    pub(super) from_time: Option<Value>,
    #[serde(borrow)]
    pub(super) backpressure: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) data: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) priority: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) headers: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) reply_to: Option<Text<'a>>,
    pub(super) seq: Option<u64>,
    pub(super) capabilities: Option<Vec<String>>,
    pub(super) model: Option<String>,
    pub(super) profile: Option<String>,
    pub(super) worker: Option<u64>,
    pub(super) justification: Option<String>,
}

impl<'a> Frame<'a> {
    /// A publish frame of `subject` and `data` and nothing else.
    pub(super) fn publish(subject: Text<'a>, data: &'a RawValue) -> Frame<'a> {
        Frame {
            op: Cow::Borrowed("pub"),
            id: None,
            sid: None,
            subject: Some(subject),
            queue: None,
            stream: None,
            from_seq: None,
            from_time: None,
            backpressure: None,
            data: Some(data),
            priority: None,
            headers: None,
            reply_to: None,
            seq: None,
            capabilities: None,
            model: None,
            profile: None,
            worker: None,
            justification: None,
        }
    }
}

/// A frame's string field, borrowed from the frame when it holds no escape. (serde
/// borrows only a bare `Cow<str>`; an `Option<Cow<str>>` is always copied, which
/// was an allocation per publish for its subject.)
#[derive(Debug)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'a> Text<'a> {
    pub(super) fn borrowed(text: &'a str) -> Text<'a> {
        Text(Cow::Borrowed(text))
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_string())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// An `err` frame's error.
#[derive(Debug)]
pub(super) struct FrameError {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) details: Map<String, Value>,
}

impl FrameError {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> FrameError {
        FrameError {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub(super) fn with(mut self, key: &str, value: impl Into<Value>) -> FrameError {
        self.details.insert(key.into(), value.into());
        self
    }

    pub(super) fn from_reason(reason: &colony_kernel::Reason) -> FrameError {
        let denial = colony_api::Denial::of(reason);
        let retry_after = denial.retry_after_secs(colony_pipeline::sequencer::now_ms());
        let mut error = FrameError::new("denied", denial.message);
        error.details = denial.details;
        error.code = reason.code();
        if let Some(secs) = retry_after {
            error.details.insert("retry_after".into(), secs.into());
        }
        error
    }

    /// The `err` frame that says so (answering the frame whose `id` it names).
    pub(super) fn refusal(mut self, id: Option<Value>) -> colony_api::bus::Refusal {
        // The code and message are the refusal's own fields, never a detail's.
        self.details.remove("code");
        self.details.remove("message");
        colony_api::bus::Refusal {
            id,
            error: colony_api::bus::RefusalError {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        }
    }
}

pub(super) fn required<T>(value: Option<T>, op: &str, field: &str) -> Result<T, FrameError> {
    value.ok_or_else(|| {
        FrameError::new("invalid", format!("`{op}` needs `{field}`")).with("field", field)
    })
}

pub(super) fn check_sid(sid: &str) -> Result<(), FrameError> {
    if sid.is_empty()
        || sid.len() > SID_BYTES_MAX
        || !sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(FrameError::new(
            "invalid",
            format!("a sid is 1 to {SID_BYTES_MAX} letters, digits or -_.:"),
        )
        .with("field", "sid"));
    }
    Ok(())
}

pub(super) fn parse_priority(text: Option<&str>) -> Result<Priority, FrameError> {
    match text {
        None | Some("normal") => Ok(Priority::Normal),
        Some("low") => Ok(Priority::Low),
        Some("high") => Ok(Priority::High),
        Some("critical") => Ok(Priority::Critical),
        Some(other) => Err(FrameError::new(
            "invalid",
            format!("priority {other:?} is not one of low, normal, high, critical"),
        )
        .with("field", "priority")),
    }
}

/// `from_time`: Unix milliseconds, or an RFC 3339 time.
pub(super) fn parse_time(value: &Value) -> Result<u64, FrameError> {
    let invalid = || {
        FrameError::new(
            "invalid",
            "from_time is Unix milliseconds or an RFC 3339 time like 2026-11-22T10:00:00Z",
        )
        .with("field", "from_time")
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(invalid),
        Value::String(text) => humantime::parse_rfc3339_weak(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_strings_are_borrowed_unless_they_hold_an_escape() {
        let text = r#"{"op":"pub","subject":"orders.new","reply_to":"a\u002eb","data":1}"#;
        let frame: Frame = serde_json::from_str(text).unwrap();
        let subject = frame.subject.as_ref().unwrap();
        assert!(matches!(subject.0, Cow::Borrowed(_)));
        assert_eq!(&**subject, "orders.new");
        let reply_to = frame.reply_to.as_ref().unwrap();
        assert!(matches!(reply_to.0, Cow::Owned(_)));
        assert_eq!(&**reply_to, "a.b");
        assert!(frame.sid.is_none());
        let wrong = serde_json::from_str::<Frame>(r#"{"op":"pub","subject":7}"#);
        assert!(wrong.is_err_and(|e| e.to_string().contains("a string")));
    }
}
