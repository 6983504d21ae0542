//! What the node presents to an upstream at a `url` beyond its bearer token: extra
//! headers (`headers`, literal; `headers_env`, read from the node's environment at
//! start, for keys that must not sit in a file) and the CA its certificate is
//! checked against (`ca_file`, besides the system's roots).

use std::collections::{BTreeMap, HashMap};

use http::{HeaderName, HeaderValue};

/// Most extra headers one server may be given.
pub const HEADERS_MAX: usize = 16;

/// Headers the transport sets itself (or `bearer_token_*` does): not configurable.
const RESERVED: &[&str] = &[
    "authorization",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "accept",
    "last-event-id",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

/// Where one header's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSource {
    /// As written in mcp.toml (`headers`).
    Value(String),
    /// A variable of the node's environment (`headers_env`).
    Env(String),
}

/// Checks `headers` and `headers_env` of server `name`: names any HTTP header but the
/// reserved ones, values that are header values, variables that are names.
pub(crate) fn check(
    name: &str,
    headers: BTreeMap<String, String>,
    headers_env: BTreeMap<String, String>,
) -> Result<Vec<(String, HeaderSource)>, String> {
    if headers.len() + headers_env.len() > HEADERS_MAX {
        return Err(format!(
            "servers.{name}: at most {HEADERS_MAX} headers (headers and headers_env together)"
        ));
    }
    let mut checked = Vec::new();
    let sources = headers
        .into_iter()
        .map(|(header, value)| (header, HeaderSource::Value(value), "headers"))
        .chain(
            headers_env
                .into_iter()
                .map(|(header, variable)| (header, HeaderSource::Env(variable), "headers_env")),
        );
    for (header, source, key) in sources {
        let lower = header.to_ascii_lowercase();
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(format!(
                "servers.{name}.{key}: `{header}` is not a header name"
            ));
        }
        if RESERVED.contains(&lower.as_str()) || lower.starts_with("mcp-param-") {
            return Err(format!(
                "servers.{name}.{key}: `{header}` is set by the node itself (a bearer token goes in bearer_token_env or bearer_token_file)"
            ));
        }
        if checked
            .iter()
            .any(|(other, _): &(String, HeaderSource)| other.eq_ignore_ascii_case(&header))
        {
            return Err(format!(
                "servers.{name}: the header `{header}` is given twice"
            ));
        }
        match &source {
            HeaderSource::Value(value) if HeaderValue::from_str(value).is_err() => {
                return Err(format!(
                    "servers.{name}.headers: the value of `{header}` is not a header value (visible ASCII)"
                ))
            }
            HeaderSource::Env(variable)
                if variable.is_empty()
                    || !variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                return Err(format!(
                    "servers.{name}.headers_env: `{variable}` is the name of an environment variable"
                ))
            }
            _ => {}
        }
        checked.push((header, source));
    }
    Ok(checked)
}

/// The headers with their values, the variables read from `env`; `Err` names a
/// variable that is not set or not a header value.
pub(crate) fn resolve(
    server: &str,
    headers: &[(String, HeaderSource)],
    env: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<HeaderName, HeaderValue>, String> {
    let mut resolved = HashMap::new();
    for (header, source) in headers {
        let value = match source {
            HeaderSource::Value(value) => value.clone(),
            HeaderSource::Env(variable) => env(variable)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!(
                        "mcp.toml: server `{server}` sends the header {header} from {variable}, which is not set in the node's environment"
                    )
                })?,
        };
        let name = HeaderName::from_bytes(header.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            format!("mcp.toml: server `{server}`: the value of the header {header} is not a header value")
        })?;
        resolved.insert(name, value);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn headers_are_checked_and_read_from_the_environment() {
        let checked = check(
            "tracker",
            map(&[("X-Tenant", "acme")]),
            map(&[("X-Api-Key", "TRACKER_KEY")]),
        )
        .unwrap();
        let resolved = resolve("tracker", &checked, |v| {
            (v == "TRACKER_KEY").then(|| "k-123".to_string())
        })
        .unwrap();
        assert_eq!(resolved[&HeaderName::from_static("x-tenant")], "acme");
        assert_eq!(resolved[&HeaderName::from_static("x-api-key")], "k-123");
        let missing = resolve("tracker", &checked, |_| None).unwrap_err();
        assert!(missing.contains("TRACKER_KEY"), "{missing}");
    }

    #[test]
    fn reserved_or_malformed_headers_are_refused() {
        for (headers, env, expected) in [
            (
                map(&[("Authorization", "Bearer x")]),
                map(&[]),
                "set by the node",
            ),
            (map(&[("Mcp-Session-Id", "1")]), map(&[]), "set by the node"),
            (
                map(&[("Mcp-Param-Region", "eu")]),
                map(&[]),
                "set by the node",
            ),
            (map(&[("bad header", "x")]), map(&[]), "not a header name"),
            (
                map(&[("X-A", "line\nbreak")]),
                map(&[]),
                "not a header value",
            ),
            (
                map(&[]),
                map(&[("X-A", "not-a-name")]),
                "environment variable",
            ),
            (map(&[("X-A", "1")]), map(&[("x-a", "A")]), "twice"),
        ] {
            let error = check("s", headers, env).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let many: BTreeMap<String, String> = (0..=HEADERS_MAX)
            .map(|n| (format!("X-{n}"), "v".to_string()))
            .collect();
        assert!(check("s", many, map(&[])).unwrap_err().contains("at most"));
    }
}
