//! Reads the JetStream meta group (leader and peers) from a nats-server's HTTP monitoring
//! endpoint `/jsz`.
//!
//! The client protocol has no `$SYS`-free request that names the meta leader (`$JS.API.INFO`
//! and stream info do not), so the Broker controller asks the servers' monitoring port
//! (8222, exposed on the headless Service) directly. A server reports the leader and the
//! *other* members of the meta group; the peers are those plus the server asked. A server
//! without clustering (a one-replica Broker) has no meta group: leader unknown, the server is
//! its only peer.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The JetStream meta group as one server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaGroup {
    /// Server name of the meta leader; `None` without clustering or during an election.
    pub leader: Option<String>,
    /// Server names of the members, sorted.
    pub peers: Vec<String>,
}

#[derive(Deserialize)]
struct Jsz {
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
}

#[derive(Deserialize)]
struct MetaCluster {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    replicas: Vec<Peer>,
}

#[derive(Deserialize)]
struct Peer {
    name: String,
}

/// Largest `/jsz` response read (the meta section comes without stream details).
const MAX_RESPONSE: u64 = 1 << 20;

/// Parses a `/jsz` body returned by server `server_name`.
pub fn parse_jsz(body: &[u8], server_name: &str) -> Result<MetaGroup, String> {
    let jsz: Jsz = serde_json::from_slice(body)
        .map_err(|e| format!("the /jsz response of {server_name} is not JetStream info: {e}"))?;
    let mut peers = vec![server_name.to_string()];
    let mut leader = None;
    if let Some(meta) = jsz.meta_cluster {
        leader = meta.leader.filter(|l| !l.is_empty());
        peers.extend(meta.replicas.into_iter().map(|p| p.name));
    }
    peers.sort();
    peers.dedup();
    Ok(MetaGroup { leader, peers })
}

/// Fetches `http://<host>:<port>/jsz` (HTTP/1.0, so the body is never chunked) and parses it
/// as the view of server `server_name`. The whole exchange is bounded by `timeout`.
pub async fn meta_group(
    host: &str,
    port: u16,
    server_name: &str,
    timeout: Duration,
) -> Result<MetaGroup, String> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let request =
            format!("GET /jsz HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {host}:{port}: {e}"))?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("cannot read from {host}:{port}: {e}"))?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{host}:{port} did not answer /jsz within {timeout:?}"))??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{host}:{port} sent a malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return Err(format!(
            "{host}:{port} answered /jsz with {:?}",
            head.lines().next().unwrap_or_default()
        ));
    }
    parse_jsz(&response[split + 4..], server_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_clustered_server() {
        let body = br#"{"server_id":"x","meta_cluster":{"name":"c","leader":"main-1","peer":"p",
            "replicas":[{"name":"main-2","current":true,"peer":"a"},{"name":"main-1","current":true,"peer":"b"}],
            "cluster_size":3}}"#;
        let m = parse_jsz(body, "main-0").unwrap();
        assert_eq!(m.leader.as_deref(), Some("main-1"));
        assert_eq!(m.peers, ["main-0", "main-1", "main-2"]);
    }

    #[test]
    fn single_server_has_no_leader() {
        let m = parse_jsz(br#"{"server_id":"x","streams":0}"#, "main-0").unwrap();
        assert_eq!(
            m,
            MetaGroup {
                leader: None,
                peers: vec!["main-0".into()]
            }
        );
        let m = parse_jsz(br#"{"meta_cluster":{"leader":"","replicas":[]}}"#, "main-0").unwrap();
        assert_eq!(m.leader, None);
        assert!(parse_jsz(b"<html>", "main-0").is_err());
    }
}
