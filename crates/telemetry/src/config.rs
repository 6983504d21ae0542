//! Where traces go, from the standard OpenTelemetry variables.

use std::time::Duration;

/// The OTLP encodings over HTTP that Colony exports in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// Where and how to export spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The full URL spans are POSTed to (`{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`,
    /// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is).
    pub traces_endpoint: String,
    pub protocol: OtlpProtocol,
    /// One export's deadline (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
    pub timeout: Duration,
    /// How long spans wait to be batched (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub schedule_delay: Duration,
    /// `OTEL_SERVICE_NAME` is set (else the service is `colony`).
    pub service_name_from_env: bool,
}

/// Longest export deadline and batching delay taken from the environment.
const DURATION_MAX: Duration = Duration::from_secs(600);

impl TelemetryConfig {
    /// Spans to `traces_endpoint` in `protocol`, with the SDK's defaults.
    pub fn new(traces_endpoint: impl Into<String>, protocol: OtlpProtocol) -> TelemetryConfig {
        TelemetryConfig {
            traces_endpoint: traces_endpoint.into(),
            protocol,
            timeout: Duration::from_secs(10),
            schedule_delay: Duration::from_secs(5),
            service_name_from_env: false,
        }
    }

    /// The configuration the standard variables describe (`get` reads one), `None`
    /// when no endpoint is set, `OTEL_SDK_DISABLED` is `true` or
    /// `OTEL_TRACES_EXPORTER` is `none`; an error naming the variable when one is
    /// set to something Colony cannot honour (`grpc`, say), so that a node never
    /// runs believing it is traced when it is not.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TelemetryConfig>, String> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other:?}: Colony exports traces over OTLP only (\"otlp\", or \"none\")"
                ))
            }
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "the OTLP endpoint {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        let (variable, protocol) = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            ),
        };
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("http/json") => OtlpProtocol::HttpJson,
            Some(other) => {
                return Err(format!(
                    "{variable}={other:?}: Colony exports OTLP over HTTP, \"http/protobuf\" or \"http/json\" (point it at the collector's HTTP port, 4318)"
                ))
            }
        };
        let millis = |name: &str, default: Duration| -> Result<Duration, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map(|d| d.min(DURATION_MAX))
                    .map_err(|_| format!("{name}={v:?} is not a number of milliseconds")),
            }
        };
        let mut config = TelemetryConfig::new(endpoint, protocol);
        config.timeout = millis(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            millis("OTEL_EXPORTER_OTLP_TIMEOUT", config.timeout)?,
        )?;
        config.schedule_delay = millis("OTEL_BSP_SCHEDULE_DELAY", config.schedule_delay)?;
        config.service_name_from_env = get("OTEL_SERVICE_NAME").is_some();
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<TelemetryConfig>, String> {
        TelemetryConfig::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_set() {
        assert_eq!(from(&[]), Ok(None));
        assert_eq!(
            from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Ok(None)
        );
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        assert!(from(&on).unwrap().is_some());
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(from(&disabled), Ok(None));
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert_eq!(from(&none), Ok(None));
    }

    #[test]
    fn the_endpoint_and_protocol_follow_the_specification() {
        let base = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.traces_endpoint, "http://c:4318/v1/traces");
        assert_eq!(base.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(base.timeout, Duration::from_secs(10));
        let traces = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(traces.traces_endpoint, "https://t/x");
        assert_eq!(traces.protocol, OtlpProtocol::HttpJson);
        assert_eq!(traces.timeout, Duration::from_millis(2500));
        assert_eq!(traces.schedule_delay, Duration::from_millis(100));
    }

    #[test]
    fn what_colony_cannot_honour_is_refused_by_name() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let grpc = from(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(
            grpc.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && grpc.contains("4318"),
            "{grpc}"
        );
        let zipkin = from(&[on, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(zipkin.contains("OTEL_TRACES_EXPORTER"), "{zipkin}");
        let bad = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).unwrap_err();
        assert!(bad.contains("http://"), "{bad}");
        let timeout = from(&[on, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).unwrap_err();
        assert!(timeout.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{timeout}");
    }
}
