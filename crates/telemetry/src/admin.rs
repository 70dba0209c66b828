//! The admin HTTP endpoint every walcast service runs.
//!
//! * `GET /health`: 200 while the process runs (a liveness probe);
//! * `GET /ready`: 200 once the service does its job (connected, streaming), 503 before and
//!   while it is degraded, with a one-line reason;
//! * `GET /metrics`: Prometheus text.
//!
//! It binds wherever the config says; the shipped configs say 127.0.0.1, because metrics and
//! health reveal topology and must not face a network by accident.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Registry;

/// Readiness shared between a service and its admin endpoint. Starts not ready.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<RwLock<(bool, String)>>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            state: Arc::new(RwLock::new((false, "starting".to_owned()))),
        }
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.set(ready, if ready { "ready" } else { "not ready" });
    }

    /// Sets readiness with the reason an operator sees on `/ready`.
    pub fn set(&self, ready: bool, reason: &str) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        *s = (ready, reason.to_owned());
    }

    pub fn is_ready(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).0
    }

    fn reason(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Health,
}

/// The router alone, for services that serve more routes on the same port.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(AppState { registry, health })
}

/// Binds the admin address, with an error that names it and the config key to change.
/// Bind first, then [`serve`]: the listener's `local_addr` tells the port when `listen` says 0.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "admin endpoint cannot listen on {listen}: {e}; set another [admin] listen address"
            ),
        )
    })
}

/// Serves the admin endpoint on an already bound listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let reason = s.health.reason();
    if s.health.is_ready() {
        (StatusCode::OK, format!("{reason}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.registry.render(),
    )
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        s.read_to_string(&mut out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[tokio::test]
    async fn serves_health_ready_and_metrics() {
        let registry = Registry::default();
        registry
            .counter("walcast_test_total", "A test counter.", &[])
            .inc();
        let health = Health::default();
        let listener = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, health.clone(), async {
            let _ = rx.await;
        }));
        assert!(get(addr, "/health").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/ready").await;
        assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("starting"));
        health.set(true, "streaming from 0/16B3748");
        assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").await.contains("walcast_test_total 1"));
        let _ = tx.send(());
        assert!(server.await.is_ok());
    }
}
