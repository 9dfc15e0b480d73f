//! A local TCP port forwarded to a pod port through the Kubernetes API (`kubectl port-forward`
//! in-process). Every accepted connection gets its own port-forward stream, so a client that
//! reconnects (NATS does) is forwarded again.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::Portforwarder;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument as _;

/// Why a port-forward could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The API server refused or failed the port-forward (pod gone, no `pods/portforward`
    /// permission, ...).
    #[error("the API server could not open the port-forward: {0}")]
    Open(#[source] kube::Error),
    /// No local port could be bound.
    #[error("failed to bind a local port on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
}

/// A running forward from `127.0.0.1:<port>` to a pod port; stopped by [`PortForward::stop`]
/// or on drop.
#[derive(Debug)]
pub struct PortForward {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl PortForward {
    /// Opens a first port-forward to `pod` (so a missing pod or a missing `pods/portforward`
    /// permission fails here), binds a local port and starts forwarding to `port`.
    pub async fn start(pods: Api<Pod>, pod: String, port: u16) -> Result<Self, ForwardError> {
        let first = pods
            .portforward(&pod, &[port])
            .await
            .map_err(ForwardError::Open)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(ForwardError::Bind)?;
        let local = listener.local_addr().map_err(ForwardError::Bind)?;
        let span = tracing::info_span!("port_forward", pod = %pod, port, %local);
        let task = tokio::spawn(serve(listener, pods, pod, port, first).instrument(span));
        Ok(Self { local, task })
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The local address as a NATS URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.local)
    }

    /// Stops accepting and closes every forwarded connection.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts local connections and bridges each one; the connection tasks live in a `JoinSet`, so
/// aborting this task ends them too.
async fn serve(
    listener: TcpListener,
    pods: Api<Pod>,
    pod: String,
    port: u16,
    first: Portforwarder,
) {
    let mut first = Some(first);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let forwarder = first.take();
                    let (pods, pod) = (pods.clone(), pod.clone());
                    connections.spawn(
                        async move {
                            if let Err(e) = bridge(socket, forwarder, &pods, &pod, port).await {
                                tracing::warn!(error = %e, "forwarded connection failed");
                            }
                        }
                        .instrument(tracing::debug_span!("connection", %peer)),
                    );
                }
                Err(e) => tracing::warn!(error = %e, "failed to accept a local connection"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies bytes both ways between `socket` and a port-forward stream (`forwarder`, or a new one).
async fn bridge(
    mut socket: TcpStream,
    forwarder: Option<Portforwarder>,
    pods: &Api<Pod>,
    pod: &str,
    port: u16,
) -> anyhow::Result<()> {
    let mut forwarder = match forwarder {
        Some(f) => f,
        None => pods.portforward(pod, &[port]).await?,
    };
    let mut upstream = forwarder
        .take_stream(port)
        .ok_or_else(|| anyhow::anyhow!("port-forward to {pod} opened no stream for port {port}"))?;
    let copied = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
    let _ = socket.shutdown().await;
    drop(upstream);
    let joined = forwarder.join().await;
    copied?;
    joined?;
    Ok(())
}
