//! A webhook receiver: a small HTTP server on 127.0.0.1:0 that records
//! every JSON body POSTed to it, in arrival order, and answers 200. It
//! stops when dropped.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

pub struct WebhookReceiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route("/", post(receive))
            .with_state(Arc::clone(&bodies));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let url = format!("http://{}/", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, bodies, task }
    }

    /// Every body received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("receiver lock").clone()
    }

    /// The ids of the events of `service` received so far, in arrival order.
    pub fn event_ids(&self, service: &str) -> Vec<u64> {
        self.bodies()
            .iter()
            .filter(|b| b["service"] == service)
            .filter_map(|b| b["id"].as_u64())
            .collect()
    }
}

async fn receive(
    State(bodies): State<Arc<Mutex<Vec<Value>>>>,
    Json(body): Json<Value>,
) -> StatusCode {
    bodies.lock().expect("receiver lock").push(body);
    StatusCode::OK
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
