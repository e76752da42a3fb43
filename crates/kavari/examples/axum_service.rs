//! An axum service with Kavari's lifecycle, as the Python library's FastAPI
//! lifespan: start the consumer at startup, expose `/health` and Prometheus
//! `/metrics`, publish from a POST route, shut down cleanly on SIGTERM or
//! Ctrl-C.
//!
//! `cargo run -p kavari --features metrics --example axum_service` then
//! `curl -XPOST localhost:3000/orders -H 'content-type: application/json' -d '{"order_id":"o-1","amount_cents":100}'`,
//! `curl localhost:3000/health` and `curl localhost:3000/metrics`.
//!
//! `KAVARI_BROKERS` names your Kafka; otherwise a local test broker starts.
//! `PORT` sets the HTTP port (default 3000).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kavari::{HandlerError, KafkaMessage, Kavari, MessageContext, MessageHandler};
use kavari_testcontainers::KafkaBroker;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, KafkaMessage)]
#[kavari(topic = "service.orders")]
struct OrderPlaced {
    #[kavari(key)]
    order_id: String,
    amount_cents: u64,
}

struct Fulfilment;

impl MessageHandler<OrderPlaced> for Fulfilment {
    async fn handle(&self, msg: OrderPlaced, ctx: &MessageContext) -> Result<(), HandlerError> {
        tracing::info!(order = %msg.order_id, offset = ctx.offset, "fulfilling");
        Ok(())
    }
}

async fn place(
    State(kavari): State<Kavari>,
    Json(order): Json<OrderPlaced>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    match kavari.publish(&order).await {
        Ok(d) => Ok(Json(serde_json::json!({
            "topic": d.topic, "partition": d.partition, "offset": d.offset.get()
        }))),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn health(State(kavari): State<Kavari>) -> (StatusCode, Json<kavari::Health>) {
    let h = kavari.health();
    let code = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h))
}

/// Kavari's metrics (and any other the service records), in Prometheus'
/// text format.
async fn metrics(State(prometheus): State<PrometheusHandle>) -> String {
    prometheus.render()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Kavari records through the `metrics` facade; this process exports
    // what is recorded in Prometheus' format.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let broker = KafkaBroker::start().await?;
    if let Err(e) = broker.create_topic(OrderPlaced::TOPIC, 3).await {
        tracing::info!(error = %e, "topic not created");
    }

    // Startup (the lifespan's first half).
    let kavari = Kavari::builder(broker.bootstrap_servers())
        .group_id("fulfilment")
        .build()
        .await?;
    kavari.subscribe::<OrderPlaced, _>(Fulfilment)?;
    kavari.start().await?;

    let app = Router::new()
        .route("/orders", post(place))
        .route("/health", get(health))
        .with_state(kavari.clone())
        .merge(
            Router::new()
                .route("/metrics", get(metrics))
                .with_state(prometheus),
        );
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    // Shutdown (the lifespan's second half): drain, commit, leave, flush.
    kavari.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
