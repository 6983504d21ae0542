//! Colony's traces, exported to the tools people trace with: OpenTelemetry's OTLP
//! over HTTP (`http/protobuf` or `http/json`), configured by the standard
//! `OTEL_EXPORTER_OTLP_*` variables ([`TelemetryConfig::from_env`]), batched by the
//! SDK's batch processor and sent through a reqwest client on the node's runtime
//! (`client.rs`). Incoming W3C `traceparent`/`tracestate` headers become the parent
//! of what the node traces ([`parent_from`]).
//!
//! What is traced (the spans themselves) is the gateway's (`colony_gateway::trace`);
//! this crate only sets up where they go. Without the variables nothing is set up, and
//! the gateway holds no tracer: no span is made, nothing costs.

mod client;
mod config;

pub use config::{OtlpProtocol, TelemetryConfig};

use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The instrumentation scope of every span Colony makes.
pub const SCOPE: &str = "colony";

/// Spans waiting for export when the exporter falls behind; past it the newest are
/// dropped (the SDK counts them), never the node's work.
pub const SPANS_QUEUED_MAX: usize = 2_048;

/// The export pipeline, until the node stops.
pub struct Telemetry {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Telemetry {
    /// Starts exporting to `config`'s endpoint. Must be called within a tokio runtime:
    /// the batches are sent on it.
    pub fn start(config: &TelemetryConfig) -> Result<Telemetry, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "telemetry must start inside the node's runtime".to_string())?;
        let client = client::RuntimeClient::new(runtime, config.timeout)?;
        let protocol = match config.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.traces_endpoint.clone())
            .with_protocol(protocol)
            .with_timeout(config.timeout)
            .build()
            .map_err(|error| format!("the OTLP exporter: {error}"))?;
        let mut resource = Resource::builder();
        if config.service_name_from_env {
            // OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES) are read by the builder.
        } else {
            resource = resource.with_service_name("colony");
        }
        let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(SPANS_QUEUED_MAX)
            .with_scheduled_delay(config.schedule_delay)
            .build();
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        Ok(Telemetry {
            provider,
            endpoint: config.traces_endpoint.clone(),
        })
    }

    /// Where the spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A tracer for the gateway's spans.
    pub fn tracer(&self) -> BoxedTracer {
        BoxedTracer::new(Box::new(self.provider.tracer(SCOPE)))
    }

    /// Exports what is left and stops. Blocks (the batch processor's thread is
    /// joined): call it off the runtime's worker threads, as `shutdown` does.
    fn shutdown_blocking(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(10)) {
            tracing::warn!("telemetry: the last spans were not all exported: {error}");
        }
    }

    /// Exports the spans still queued, then stops.
    pub async fn shutdown(self) {
        if let Err(error) = tokio::task::spawn_blocking(move || self.shutdown_blocking()).await {
            tracing::warn!("telemetry: shutting the exporter down failed: {error}");
        }
    }
}

/// The trace context an incoming request carries (W3C `traceparent` and
/// `tracestate`), or an empty context when it carries none or an invalid one.
pub fn parent_from(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}
