//! The broker's users: who may log in and what each one may do, rendered into `users.conf`.
//!
//! nats.conf's `authorization` block only `include`s [`USERS_FILE`], which lives in the
//! Secret `<broker>-users` mounted at [`USERS_DIR`]. Adding a ConsumerGroup or a Producer
//! rewrites that Secret; the kubelet refreshes the mounted file and the operator asks every
//! server to reload (`$SYS.REQ.SERVER.<id>.RELOAD`, as the system user [`SYSTEM_USERNAME`]),
//! so new users log in without a pod restart and without dropping any connection.
//!
//! | user | password in the config | may |
//! |---|---|---|
//! | the operator (`sluice-operator`) | `$SLUICE_OPERATOR_PASSWORD` (env, from the credentials Secret) | everything (administration) |
//! | the legacy shared user (`sluice-worker`) | `$SLUICE_WORKER_PASSWORD` | the broad pre-identity permissions; the operator no longer hands it to workers |
//! | a group (`g__<ns>__<group>`) | bcrypt hash from the group's Secret | [`sluice_broker::identity::group_permissions`] |
//! | a producer (`p__<ns>__<name>`) | bcrypt hash from the producer's Secret | [`sluice_broker::identity::producer_permissions`] |
//! | the system user (`sluice-system`, system account) | `$SLUICE_OPERATOR_PASSWORD` | server requests such as reload; no JetStream, no application subjects |

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume, VolumeMount};
use sluice_broker::identity::Permissions;
use sluice_broker::{Error, ErrorKind, Result};

use super::BrokerCluster;
use super::labels::object_meta;

/// Name of the users volume in broker pods.
const USERS_VOLUME: &str = "users";

/// File name of the users list (key in the users Secret).
pub const USERS_FILE: &str = "users.conf";
/// Directory the users Secret is mounted at in broker pods.
pub const USERS_DIR: &str = "/etc/nats-users";
/// User name of the system-account user the operator asks servers to reload with.
pub const SYSTEM_USERNAME: &str = "sluice-system";
/// bcrypt cost of stored password hashes (nats-server's own `passwd` tool default).
pub const BCRYPT_COST: u32 = 11;

/// Subjects the legacy shared user may publish to (unchanged from before identities).
const LEGACY_PUBLISH_ALLOW: [&str; 6] = [
    "sluice.>",
    "$JS.API.>",
    "$JS.ACK.>",
    "$JS.FC.>",
    "$KV.>",
    "_INBOX.>",
];
const LEGACY_PUBLISH_DENY: [&str; 2] = ["$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"];
const LEGACY_SUBSCRIBE_ALLOW: [&str; 2] = ["_INBOX.>", "sluice.>"];

/// One scoped client of the broker: a group's workers or a producer.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientUser {
    /// User name (`names::group_user` / `names::producer_user`).
    pub user: String,
    /// bcrypt hash of its password ([`hash_password`]).
    pub password_hash: String,
    /// What it may do.
    pub permissions: Permissions,
}

impl std::fmt::Debug for ClientUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUser")
            .field("user", &self.user)
            .field("password_hash", &"<redacted>")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// The bcrypt hash nats-server checks a password against (cost [`BCRYPT_COST`]).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when the password cannot be hashed (longer than bcrypt takes).
pub fn hash_password(password: &str) -> Result<String> {
    hash_password_with_cost(password, BCRYPT_COST)
}

/// [`hash_password`] with an explicit cost (tests use a low one to stay fast).
///
/// # Errors
/// As [`hash_password`].
pub fn hash_password_with_cost(password: &str, cost: u32) -> Result<String> {
    bcrypt::hash(password, cost).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidSpec,
            "failed to hash a broker password: use at most 72 ASCII letters and digits",
            e,
        )
    })
}

/// Whether `hash` looks like a bcrypt hash nats-server accepts (`$2a$`, `$2b$`, ...).
pub fn is_bcrypt_hash(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60 && hash.starts_with("$2") && b[3] == b'$' && b[6] == b'$'
}

/// The operator's and the legacy shared user's entries, whose names and passwords
/// nats-server takes from the environment the StatefulSet feeds from the credentials Secret.
pub fn base_users_from_env() -> Vec<String> {
    vec![
        "{ user: $SLUICE_OPERATOR_USER, password: $SLUICE_OPERATOR_PASSWORD }".to_string(),
        format!(
            "{{ user: $SLUICE_WORKER_USER, password: $SLUICE_WORKER_PASSWORD, permissions: {{ publish: {{ allow: {}, deny: {} }}, subscribe: {{ allow: {} }} }} }}",
            list(LEGACY_PUBLISH_ALLOW.iter()),
            list(LEGACY_PUBLISH_DENY.iter()),
            list(LEGACY_SUBSCRIBE_ALLOW.iter()),
        ),
    ]
}

/// A user entry with a literal name and password and no restriction (an administrator, e.g.
/// in tests and `sluice dev`).
pub fn admin_user(user: &str, password: &str) -> String {
    format!("{{ user: {}, password: {} }}", quote(user), quote(password))
}

/// Renders `users.conf`: `base` entries verbatim, then one entry per client with its bcrypt
/// hash and its allow lists. Deterministic for the same input, so its hash can tell whether
/// servers have the current version.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] when a client's hash is not a bcrypt hash or its name or a
/// subject would break the file (quotes, whitespace).
pub fn users_conf(base: &[String], clients: &[ClientUser]) -> Result<String> {
    let mut c = String::new();
    c.push_str("# Broker users, generated by sluice-operator: edits are overwritten.\n");
    c.push_str("users: [\n");
    for entry in base {
        let _ = writeln!(c, "  {entry}");
    }
    for client in clients {
        if !is_bcrypt_hash(&client.password_hash) {
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                format!(
                    "the password hash of broker user {} is not a bcrypt hash: delete its Secret to have new credentials generated",
                    client.user
                ),
            ));
        }
        for token in std::iter::once(&client.user)
            .chain(&client.permissions.publish)
            .chain(&client.permissions.subscribe)
        {
            if token.is_empty() || token.chars().any(|ch| ch == '"' || ch.is_whitespace()) {
                return Err(Error::new(
                    ErrorKind::InvalidSpec,
                    format!(
                        "broker user {}: {token:?} cannot be written to the users file",
                        client.user
                    ),
                ));
            }
        }
        let _ = writeln!(
            c,
            "  {{ user: {}, password: {}, permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }} }}",
            quote(&client.user),
            quote(&client.password_hash),
            list(client.permissions.publish.iter()),
            list(client.permissions.subscribe.iter()),
        );
    }
    c.push_str("]\n");
    Ok(c)
}

/// The body of nats.conf's `authorization` block: the users file, relative to the config
/// file's directory (nats-server resolves includes that way).
pub fn authorization_include(config_dir: &str) -> String {
    format!("  include \"{}\"", relative_users_path(config_dir))
}

fn relative_users_path(config_dir: &str) -> String {
    let depth = config_dir.trim_matches('/').split('/').count();
    format!(
        "{}{}/{USERS_FILE}",
        "../".repeat(depth),
        USERS_DIR.trim_start_matches('/')
    )
}

/// The system account, whose one user ([`SYSTEM_USERNAME`], with `password`: a literal or an
/// environment reference like `$SLUICE_OPERATOR_PASSWORD`) may send server requests such as
/// `$SYS.REQ.SERVER.<id>.RELOAD`.
pub fn system_account(password: &str) -> String {
    format!(
        "accounts {{\n  SYS: {{ users: [ {{ user: {}, password: {password} }} ] }}\n}}\nsystem_account: SYS\n",
        quote(SYSTEM_USERNAME)
    )
}

/// The Secret `<broker>-users` holding `users.conf`.
pub fn users_secret(cluster: &BrokerCluster, users_conf: &str) -> Secret {
    Secret {
        metadata: object_meta(cluster, cluster.users_secret_name()),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            USERS_FILE.to_string(),
            ByteString(users_conf.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The pod volume of the users Secret. The kubelet refreshes its files when the Secret
/// changes (no `subPath`, which would freeze them).
pub(super) fn users_volume(cluster: &BrokerCluster) -> Volume {
    Volume {
        name: USERS_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(cluster.users_secret_name()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Where the nats-server container sees the users file.
pub(super) fn users_volume_mount() -> VolumeMount {
    VolumeMount {
        name: USERS_VOLUME.to_string(),
        mount_path: USERS_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// A stable hash of a users file (FNV-1a, hex), recorded to know whether servers were asked
/// to load it.
pub fn users_hash(users_conf: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in users_conf.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn quote(value: &str) -> String {
    format!("\"{value}\"")
}

fn list<'a>(subjects: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let quoted: Vec<String> = subjects.map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientUser {
        ClientUser {
            user: "g__shop__billing".into(),
            password_hash: hash_password_with_cost("pAssword0123456789", 4).unwrap(),
            permissions: Permissions {
                publish: vec!["$JS.API.INFO".into(), "sluice.dlq.shop.d".into()],
                subscribe: vec!["_INBOX_g__shop__billing.>".into()],
            },
        }
    }

    #[test]
    fn renders_base_users_then_scoped_clients() {
        let c = client();
        let text = users_conf(&base_users_from_env(), std::slice::from_ref(&c)).unwrap();
        assert!(
            text.contains("{ user: $SLUICE_OPERATOR_USER, password: $SLUICE_OPERATOR_PASSWORD }")
        );
        assert!(text.contains("\"$JS.API.STREAM.DELETE.>\""), "{text}");
        let line = format!(
            "{{ user: \"g__shop__billing\", password: \"{}\", permissions: {{ publish: {{ allow: [\"$JS.API.INFO\", \"sluice.dlq.shop.d\"] }}, subscribe: {{ allow: [\"_INBOX_g__shop__billing.>\"] }} }} }}",
            c.password_hash
        );
        assert!(text.lines().any(|l| l.trim() == line), "{text}");
        assert!(!text.contains("pAssword0123456789"));
        assert_eq!(text, users_conf(&base_users_from_env(), &[c]).unwrap());
    }

    #[test]
    fn refuses_plain_passwords_and_unsafe_tokens() {
        let mut plain = client();
        plain.password_hash = "pAssword0123456789".into();
        assert_eq!(
            users_conf(&[], &[plain]).unwrap_err().kind(),
            ErrorKind::InvalidSpec
        );
        let mut quoted = client();
        quoted.permissions.publish.push("a\" b".into());
        assert!(users_conf(&[], &[quoted]).is_err());
    }

    #[test]
    fn hashes_verify_and_debug_hides_them() {
        let c = client();
        assert!(is_bcrypt_hash(&c.password_hash), "{}", c.password_hash);
        assert!(bcrypt::verify("pAssword0123456789", &c.password_hash).unwrap());
        let debug = format!("{c:?}");
        assert!(!debug.contains(&c.password_hash), "{debug}");
        assert!(debug.contains("g__shop__billing"));
    }

    #[test]
    fn include_path_is_relative_to_the_config_dir() {
        assert_eq!(
            authorization_include("/etc/nats-config"),
            "  include \"../../etc/nats-users/users.conf\""
        );
        assert!(system_account("$SLUICE_OPERATOR_PASSWORD").contains("system_account: SYS"));
    }
}
