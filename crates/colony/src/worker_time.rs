//! The pause a refusal asks for before the worker claims again.

use std::time::Duration;

/// How long to pause before claiming again after a refusal of the node: 429 (a
/// budget, a rate or a limit) for its `retry_after` (the header, the gateway's
/// `colony.retry_after`, or the API error's `retry_after`), else `otherwise`; at
/// least 1 s and at most 60 s. `None` for any other refusal.
pub(crate) fn refusal_pause(
    status: u16,
    body: &serde_json::Value,
    header: Option<Duration>,
    otherwise: Duration,
) -> Option<Duration> {
    if status != 429 {
        return None;
    }
    let pause = header
        .or_else(|| colony_api::retry_after_secs(body).map(Duration::from_secs))
        .unwrap_or(otherwise);
    Some(pause.clamp(Duration::from_secs(1), Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_to_wait_out_says_how_long_within_a_minute() {
        let five = Duration::from_secs(5);
        let secs = |s| Some(Duration::from_secs(s));
        // The header first, then the gateway's word, then the API's.
        assert_eq!(refusal_pause(429, &json!({}), secs(7), five), secs(7));
        let gateway = json!({"error": {"message": "m", "type": "t", "code": "c",
                                       "colony": {"retry_after": 12}}});
        assert_eq!(refusal_pause(429, &gateway, None, five), secs(12));
        let api = json!({"error": {"code": "rate_limited", "message": "m", "retry_after": 3}});
        assert_eq!(refusal_pause(429, &api, None, five), secs(3));
        // Nothing said: the caller's default; never below 1 s or above 60 s.
        assert_eq!(refusal_pause(429, &json!("busy"), None, five), secs(5));
        assert_eq!(refusal_pause(429, &json!({}), secs(0), five), secs(1));
        assert_eq!(refusal_pause(429, &json!({}), secs(3_600), five), secs(60));
        // Not a refusal to wait out.
        for status in [400, 403, 409, 503] {
            assert_eq!(refusal_pause(status, &json!({}), secs(1), five), None);
        }
    }
}
