//! Sending one export request, over gRPC (tonic, with the OpenTelemetry
//! project's generated client) or HTTP/protobuf (ureq), and sorting the
//! answer the way the OTLP specification does: some failures are worth a
//! retry (the receiver is away, busy or timed out), the rest never will be.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use prost::Message;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

use crate::config::{OtlpProtocol, OtlpSettings};

/// What became of one request.
pub enum Outcome {
    /// Taken; `rejected` points of it were refused (partial success).
    Sent { rejected: i64, message: String },
    /// Not taken, but may be later: keep the records.
    Retry(anyhow::Error),
    /// Refused for good (a malformed request, say): drop the records.
    Drop(anyhow::Error),
}

pub enum Transport {
    Grpc { runtime: tokio::runtime::Runtime, client: Option<MetricsServiceClient<Channel>>, metadata: MetadataMap },
    Http { agent: ureq::Agent, headers: Vec<(String, String)> },
}

impl Transport {
    pub fn new(settings: &OtlpSettings) -> Result<Self> {
        let timeout = Duration::from_secs(settings.timeout_secs.max(1));
        Ok(match settings.protocol {
            OtlpProtocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("flusher_otlp: starting its runtime")?;
                let mut metadata = MetadataMap::new();
                for (k, v) in &settings.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .with_context(|| format!("flusher_otlp: header name `{k}`"))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .with_context(|| format!("flusher_otlp: the value of header `{k}`"))?;
                    metadata.insert(key, value);
                }
                Self::Grpc { runtime, client: None, metadata }
            }
            OtlpProtocol::HttpProtobuf => {
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let headers = settings.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Self::Http { agent, headers }
            }
        })
    }

    /// Send `request` to `url`, taking at most `timeout`.
    pub fn send(&mut self, url: &str, request: ExportMetricsServiceRequest, timeout: Duration) -> Outcome {
        match self {
            Self::Grpc { runtime, client, metadata } => {
                let client = match client {
                    Some(c) => c,
                    None => {
                        let endpoint = match Channel::from_shared(url.to_string()) {
                            Ok(e) => e.connect_timeout(timeout).timeout(timeout),
                            Err(e) => return Outcome::Drop(anyhow!("endpoint {url}: {e}")),
                        };
                        // Connects at the first call, and again after a loss.
                        let _entered = runtime.enter();
                        client.insert(MetricsServiceClient::new(endpoint.connect_lazy()))
                    }
                };
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = metadata.clone();
                match runtime.block_on(client.export(req)) {
                    Ok(resp) => answered(resp.into_inner()),
                    Err(status) => grpc_failure(status),
                }
            }
            Self::Http { agent, headers } => {
                let mut post = agent.post(url).header("Content-Type", "application/x-protobuf");
                for (k, v) in headers.iter() {
                    post = post.header(k.as_str(), v.as_str());
                }
                let resp = match post.send(&request.encode_to_vec()[..]) {
                    Ok(r) => r,
                    // Not reached, refused, timed out: the receiver may be back.
                    Err(e) => return Outcome::Retry(anyhow!("POST {url}: {e}")),
                };
                let status = resp.status().as_u16();
                let body = resp.into_body().read_to_vec().unwrap_or_default();
                match status {
                    200..=299 => match ExportMetricsServiceResponse::decode(&body[..]) {
                        Ok(answer) => answered(answer),
                        // An empty or foreign body still means taken.
                        Err(_) => Outcome::Sent { rejected: 0, message: String::new() },
                    },
                    429 | 502 | 503 | 504 => Outcome::Retry(anyhow!("POST {url}: HTTP {status}")),
                    _ => Outcome::Drop(anyhow!("POST {url}: HTTP {status}: {}", String::from_utf8_lossy(&body))),
                }
            }
        }
    }
}

fn answered(answer: ExportMetricsServiceResponse) -> Outcome {
    match answer.partial_success {
        Some(p) => Outcome::Sent { rejected: p.rejected_data_points, message: p.error_message },
        None => Outcome::Sent { rejected: 0, message: String::new() },
    }
}

/// The codes OTLP lists as retryable; any other is final.
fn grpc_failure(status: tonic::Status) -> Outcome {
    use tonic::Code::*;
    let e = anyhow!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Cancelled | DeadlineExceeded | ResourceExhausted | Aborted | OutOfRange | Unavailable | DataLoss => {
            Outcome::Retry(e)
        }
        _ => Outcome::Drop(e),
    }
}
