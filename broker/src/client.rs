//! Connecting to the broker: one [`Broker`] handle per JetStream cluster, shared by the
//! provisioning, inspection and config-channel calls.

use std::time::Duration;

use async_nats::jetstream;
use tracing::instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::tls::TrustedCa;

/// Environment variable that overrides the inbox prefix of a connection (see
/// [`ConnectOptions::inbox_prefix`]).
pub const INBOX_PREFIX_ENV: &str = "SLUICE_BROKER_INBOX_PREFIX";

/// How to reach a broker. Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct ConnectOptions {
    /// One or more `nats://host:port` URLs.
    pub urls: Vec<String>,
    /// User name, when the broker requires credentials.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Connection name shown in the server's monitoring.
    pub name: String,
    /// Timeout of one JetStream API request.
    pub request_timeout: Duration,
    /// Timeout of the initial connection.
    pub connect_timeout: Duration,
    /// Only ever use `urls`, not the server addresses a cluster advertises (for a broker
    /// reached through a port-forward, whose advertised pod IPs are unreachable).
    pub ignore_discovered_servers: bool,
    /// Prefix of this connection's inboxes (replies, pull deliveries). A scoped broker
    /// identity may only subscribe below its own prefix ([`crate::names::inbox_prefix`]);
    /// `None` uses the NATS default `_INBOX`.
    pub inbox_prefix: Option<String>,
    /// The broker's CA: when set, every connection uses TLS and the server certificate must
    /// chain to it and name the host of the URL (see [`crate::tls`]). `None`: TLS only for
    /// `tls://` URLs, verified against the system roots.
    pub ca: Option<TrustedCa>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("urls", &self.urls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ignore_discovered_servers", &self.ignore_discovered_servers)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("ca", &self.ca)
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            name: "sluice".into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            ignore_discovered_servers: false,
            inbox_prefix: None,
            ca: None,
        }
    }
}

impl ConnectOptions {
    /// Options for the comma-separated URL list of `SLUICE_BROKER_URL`.
    pub fn from_url_list(list: &str) -> Self {
        Self {
            urls: parse_url_list(list),
            ..Default::default()
        }
    }

    /// Sets the user and password and the inbox prefix that goes with them: `inbox_prefix`
    /// when given (`SLUICE_BROKER_INBOX_PREFIX`), else the prefix of a Sluice identity
    /// (`g__...` for a group, `p__...` for a producer, see [`crate::identity`]), else the
    /// default.
    ///
    /// ```
    /// let mut o = sluice_broker::ConnectOptions::default();
    /// o.set_credentials(Some("g__shop__billing".into()), Some("pw".into()), None);
    /// assert_eq!(o.inbox_prefix.as_deref(), Some("_INBOX_g__shop__billing"));
    /// assert!(!format!("{o:?}").contains("pw\""));
    /// ```
    pub fn set_credentials(
        &mut self,
        user: Option<String>,
        password: Option<String>,
        inbox_prefix: Option<String>,
    ) {
        let derived = user
            .as_deref()
            .filter(|u| u.starts_with("g__") || u.starts_with("p__"))
            .map(crate::names::inbox_prefix);
        self.inbox_prefix = inbox_prefix.filter(|p| !p.is_empty()).or(derived);
        self.user = user;
        self.password = password;
    }

    /// Builds the async-nats options (credentials, name, timeouts, unlimited reconnects, TLS).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when the CA cannot be turned into a TLS configuration.
    pub fn to_nats_options(&self) -> Result<async_nats::ConnectOptions> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            .retry_on_initial_connect();
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if self.ignore_discovered_servers {
            opts = opts.ignore_discovered_servers();
        }
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix.clone());
        }
        if let Some(ca) = &self.ca {
            opts = opts
                .tls_client_config(ca.client_config()?)
                .require_tls(true);
        }
        Ok(opts)
    }
}

/// Splits `nats://a:4222, nats://b:4222` into trimmed, non-empty URLs.
pub fn parse_url_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A connection to one JetStream broker.
#[derive(Debug, Clone)]
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Broker {
    /// Connects and checks that JetStream is enabled, failing fast when the broker is down.
    #[instrument(skip(options), fields(urls = ?options.urls))]
    pub async fn connect(options: &ConnectOptions) -> Result<Self> {
        if options.urls.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                "no broker URL given: set SLUICE_BROKER_URL to one or more nats:// URLs",
            ));
        }
        let mut addrs = Vec::with_capacity(options.urls.len());
        for url in &options.urls {
            let addr: async_nats::ServerAddr = url.parse().map_err(|e| {
                Error::with_source(
                    ErrorKind::InvalidSpec,
                    format!("invalid broker URL {url:?}: use nats://host:port"),
                    e,
                )
            })?;
            addrs.push(addr);
        }
        let connect = options.to_nats_options()?.connect(addrs);
        // retry_on_initial_connect returns at once; JetStream's first answer proves reachability.
        let client = connect.await.map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!("failed to connect to broker at {}", options.urls.join(",")),
                e,
            )
        })?;
        let broker = Self::from_client(client);
        let probe = tokio::time::timeout(
            options.connect_timeout + options.request_timeout,
            broker.js.query_account(),
        )
        .await;
        match probe {
            Ok(Ok(_)) => Ok(broker),
            Ok(Err(e)) => Err(Error::with_source(
                ErrorKind::Unavailable,
                format!(
                    "broker at {} did not answer a JetStream request (is JetStream enabled and are the credentials right?)",
                    options.urls.join(",")
                ),
                e,
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "broker at {} did not answer within {:?}: check that it runs and is reachable",
                    options.urls.join(","),
                    options.connect_timeout + options.request_timeout
                ),
            )),
        }
    }

    /// Wraps an existing connection.
    pub fn from_client(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        Self { client, js }
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_are_split_and_trimmed() {
        assert_eq!(
            parse_url_list(" nats://a:1 ,nats://b:2,, "),
            vec!["nats://a:1".to_string(), "nats://b:2".to_string()]
        );
    }

    #[tokio::test]
    async fn unreachable_broker_is_reported_as_unavailable() {
        let port = crate::embedded::free_port().unwrap();
        let err = Broker::connect(&ConnectOptions {
            urls: vec![format!("nats://127.0.0.1:{port}")],
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
