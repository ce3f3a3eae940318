//! OpenTelemetry traces over OTLP/HTTP with JSON bodies: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, the spans of [`crate::trace`] are batched and posted to
//! `{endpoint}/v1/traces`; without it nothing is built and nothing is sent.
//!
//! The exporter posts through the host's own reqwest (rustls with `ring`,
//! the one HTTP stack of the binary), on a small runtime of its own, so the
//! batch thread of the SDK can export whatever the command's runtime does,
//! including after it has ended.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// The variables that name where traces go; one of them turns export on.
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The variables that choose the OTLP protocol; only `http/json` is built in.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the end of the process waits for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A tracing layer of any kind, boxed.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Exports spans while it lives; dropping it sends what is left.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("warning: OpenTelemetry: the last spans may not have been sent: {e}");
        }
    }
}

/// The tracing layer that exports the run's spans, when the environment
/// (`var`) names an OTLP endpoint; `None` otherwise. Fails with BadInput
/// naming the variable for a protocol other than `http/json` or an
/// endpoint that is not a URL.
pub fn layer<S>(var: impl Fn(&str) -> Option<String>) -> Result<Option<(BoxedLayer<S>, Telemetry)>>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint_var) = ENDPOINT_VARS
        .into_iter()
        .find(|name| var(name).is_some_and(|v| !v.trim().is_empty()))
    else {
        return Ok(None);
    };
    for name in PROTOCOL_VARS {
        if let Some(protocol) = var(name).filter(|p| !p.trim().is_empty())
            && protocol.trim() != "http/json"
        {
            return Err(Error::bad_input(
                format!("environment variable {name}"),
                format!(
                    "'{protocol}': orrery exports traces over OTLP/HTTP with JSON only; set it to http/json (or unset it)"
                ),
            ));
        }
    }
    let endpoint = var(endpoint_var).unwrap_or_default();
    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
        return Err(Error::bad_input(
            format!("environment variable {endpoint_var}"),
            format!("'{endpoint}' is not an http:// or https:// URL"),
        ));
    }
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_input(
            format!("environment variable {endpoint_var}"),
            format!("cannot export traces to '{endpoint}': {e}"),
        )
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(Exporter::start().map_err(|e| bad(&e))?)
        .build()
        .map_err(|e| bad(&e))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("orrery").build())
        .build();
    let tracer = provider.tracer("orrery");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_filter(Targets::new().with_target(crate::trace::TARGET, tracing::Level::INFO));
    Ok(Some((Box::new(layer), Telemetry { provider })))
}

/// Posts the SDK's export requests with reqwest, on a runtime of its own.
#[derive(Debug)]
struct Exporter {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Exporter {
    fn start() -> std::result::Result<Exporter, String> {
        let client = crate::http_client::builder()
            .timeout(EXPORT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(std::future::pending::<()>());
            })
            .map_err(|e| e.to_string())?;
        let runtime = rx
            .recv()
            .map_err(|_| "the export thread did not start".to_string())??;
        Ok(Exporter { client, runtime })
    }
}

#[async_trait]
impl HttpClient for Exporter {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> std::result::Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let answer = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await?;
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, reqwest::Error>(response)
        });
        let answer = sent.await?;
        warn_once(&answer);
        Ok(answer?)
    }
}

/// Says once per process that spans did not go out (a refused connection,
/// an endpoint answering an error): the exporter itself drops them without
/// a word, and only a timeout at the end was reported.
fn warn_once(answer: &std::result::Result<Response<Bytes>, reqwest::Error>) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let why = match answer {
        Ok(r) if r.status().is_success() => return,
        Ok(r) => format!("the endpoint answered {}", r.status()),
        Err(e) => crate::http_client::failure_text(e),
    };
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // Not a tracing event: it would be exported in turn.
        eprintln!(
            "warning: OpenTelemetry: spans were not sent ({why}); later failures are not repeated"
        );
    }
}
