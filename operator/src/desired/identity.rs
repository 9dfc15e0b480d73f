//! Identity Secrets: the broker login of one ConsumerGroup (`<group>-broker-identity`, owned by
//! the group) or one producer, and what the Broker controller reads back from them to render
//! its users file (see `broker_cluster::users`).
//!
//! | key / metadata | holds |
//! |---|---|
//! | `SLUICE_BROKER_USER` | the user name (`g__<ns>__<group>` / `p__<ns>__<name>`) |
//! | `SLUICE_BROKER_PASSWORD` | the password (generated once; delete the Secret to rotate) |
//! | `SLUICE_BROKER_PASSWORD_HASH` | its bcrypt hash, the only form the servers see |
//! | `SLUICE_BROKER_URL` | the broker's client URL (producer Secrets, for `envFrom`) |
//! | `SLUICE_BROKER_CA` | the broker's CA certificates, PEM (producer Secrets, when the Broker serves TLS) |
//! | `SLUICE_NAMESPACE` | the namespace of the Topics and Queues (producer Secrets) |
//! | label `sluice.dev/broker-identity: <broker>` | which Broker's users file lists it (checked when the Broker reads the Secret by name) |
//! | annotation `sluice.dev/permissions` | the allow lists, JSON (`sluice_broker::identity::Permissions`) |
//!
//! The keys are environment variable names, so an application can take the whole Secret with
//! `envFrom`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sluice_broker::identity::Permissions;

use crate::broker_cluster::users::{ClientUser, is_bcrypt_hash};

/// Label naming the Broker whose users file lists the identity.
pub const BROKER_IDENTITY_LABEL: &str = "sluice.dev/broker-identity";
/// Annotation carrying the identity's permissions as JSON.
pub const PERMISSIONS_ANNOTATION: &str = "sluice.dev/permissions";
/// Pod-template annotation of a group's workers: a hash of the identity's password hash, so
/// a rotated password rolls the workers.
pub const IDENTITY_HASH_ANNOTATION: &str = "sluice.dev/identity-hash";
/// Secret key of the user name.
pub const USER_KEY: &str = "SLUICE_BROKER_USER";
/// Secret key of the password.
pub const PASSWORD_KEY: &str = "SLUICE_BROKER_PASSWORD";
/// Secret key of the password's bcrypt hash.
pub const HASH_KEY: &str = "SLUICE_BROKER_PASSWORD_HASH";
/// Secret key of the broker URL.
pub const URL_KEY: &str = "SLUICE_BROKER_URL";
/// Secret key of the broker's CA (PEM).
pub const CA_KEY: &str = sluice_broker::tls::BROKER_CA_ENV;
/// Secret key of the namespace producers publish in.
pub const NAMESPACE_KEY: &str = "SLUICE_NAMESPACE";

/// Name of a producer's identity Secret (`<producer>-producer-identity`), made for each name
/// in the `producers` list of a Topic or Queue.
pub fn producer_identity_secret_name(producer: &str) -> String {
    format!("{producer}-producer-identity")
}

/// Name of a group's identity Secret.
pub fn group_identity_secret_name(group: &str) -> String {
    format!("{group}-broker-identity")
}

/// What an identity Secret is built from.
#[derive(Clone)]
pub struct IdentityInputs<'a> {
    /// Namespace of the Secret (and of the group or producer).
    pub namespace: &'a str,
    /// Secret name.
    pub name: String,
    /// The Broker that lists the identity.
    pub broker: &'a str,
    /// The group or producer that owns the Secret (deleted with it).
    pub owner: Option<OwnerReference>,
    /// The broker user name.
    pub user: String,
    /// The password.
    pub password: &'a str,
    /// Its bcrypt hash.
    pub password_hash: String,
    /// What the identity may do.
    pub permissions: &'a Permissions,
    /// The broker URL to include (producers), if any; with it the Secret also carries
    /// `SLUICE_NAMESPACE`, so an application can take it whole with `envFrom`.
    pub url: Option<&'a str>,
    /// The broker's CA (PEM) to include (producers of a Broker serving TLS).
    pub ca: Option<&'a str>,
}

impl std::fmt::Debug for IdentityInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityInputs")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("broker", &self.broker)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("password_hash", &"<redacted>")
            .field("permissions", &self.permissions)
            .field("url", &self.url)
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

/// The identity Secret.
pub fn identity_secret(inputs: &IdentityInputs<'_>) -> Secret {
    let mut data = BTreeMap::from([
        (USER_KEY.to_string(), bytes(&inputs.user)),
        (PASSWORD_KEY.to_string(), bytes(inputs.password)),
        (HASH_KEY.to_string(), bytes(&inputs.password_hash)),
    ]);
    if let Some(url) = inputs.url {
        data.insert(URL_KEY.to_string(), bytes(url));
        data.insert(NAMESPACE_KEY.to_string(), bytes(inputs.namespace));
    }
    if let Some(ca) = inputs.ca {
        data.insert(CA_KEY.to_string(), bytes(ca));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(inputs.name.clone()),
            namespace: Some(inputs.namespace.to_string()),
            labels: Some(BTreeMap::from([
                (BROKER_IDENTITY_LABEL.to_string(), inputs.broker.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "sluice-operator".to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                PERMISSIONS_ANNOTATION.to_string(),
                permissions_json(inputs.permissions),
            )])),
            owner_references: inputs.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The permissions annotation's value.
pub fn permissions_json(permissions: &Permissions) -> String {
    serde_json::to_string(permissions).unwrap_or_default()
}

/// Reads a broker user back from an identity Secret; `None` (with the reason) when it lacks
/// a key, its hash is not bcrypt or its permissions do not parse.
pub fn client_user(secret: &Secret) -> Result<ClientUser, String> {
    let name = secret.metadata.name.as_deref().unwrap_or("<unnamed>");
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("identity Secret {name} lacks the key {key}; delete it to have it generated again"))
    };
    let user = value(USER_KEY)?;
    let password_hash = value(HASH_KEY)?;
    if !is_bcrypt_hash(&password_hash) {
        return Err(format!(
            "identity Secret {name}: {HASH_KEY} is not a bcrypt hash; delete it to have it generated again"
        ));
    }
    let permissions = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PERMISSIONS_ANNOTATION))
        .ok_or_else(|| format!("identity Secret {name} has no {PERMISSIONS_ANNOTATION} annotation"))
        .and_then(|json| {
            serde_json::from_str::<Permissions>(json)
                .map_err(|e| format!("identity Secret {name}: {PERMISSIONS_ANNOTATION}: {e}"))
        })?;
    Ok(ClientUser {
        user,
        password_hash,
        permissions,
    })
}

/// Points a group's worker Deployment at its identity Secret: every container that gets the
/// `SLUICE_*` environment (it has `SLUICE_GROUP`) takes `SLUICE_BROKER_USER` and
/// `SLUICE_BROKER_PASSWORD` from `secret` instead of the Broker's shared credentials, and the
/// pod template carries a hash of `password_hash` so a rotated password rolls the workers.
pub fn use_identity(deployment: &mut Deployment, secret: &str, password_hash: &str) {
    let Some(template) = deployment.spec.as_mut().map(|s| &mut s.template) else {
        return;
    };
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            IDENTITY_HASH_ANNOTATION.to_string(),
            crate::controller::kube_api::content_hash(password_hash.as_bytes()),
        );
    let Some(pod) = template.spec.as_mut() else {
        return;
    };
    for container in &mut pod.containers {
        let Some(env) = container.env.as_mut() else {
            continue;
        };
        if !env.iter().any(|e| e.name == "SLUICE_GROUP") {
            continue;
        }
        env.retain(|e| e.name != USER_KEY && e.name != PASSWORD_KEY);
        for key in [USER_KEY, PASSWORD_KEY] {
            env.push(EnvVar {
                name: key.to_string(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_string(),
                        key: key.to_string(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
            });
        }
    }
}

fn bytes(value: &str) -> ByteString {
    ByteString(value.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_cluster::users::hash_password_with_cost;

    #[test]
    fn a_secret_round_trips_into_a_users_file_entry_and_never_debugs_its_password() {
        let permissions = Permissions {
            publish: vec!["sluice.t.shop.orders.*".into()],
            subscribe: vec!["_INBOX_p__shop__order-api.>".into()],
        };
        let hash = hash_password_with_cost("pAssword0123456789", 4).unwrap();
        let inputs = IdentityInputs {
            namespace: "shop",
            name: "order-api-broker-identity".into(),
            broker: "main",
            owner: None,
            user: "p__shop__order-api".into(),
            password: "pAssword0123456789",
            password_hash: hash.clone(),
            permissions: &permissions,
            url: Some("nats://main-client.shop.svc:4222"),
            ca: Some("-----BEGIN CERTIFICATE-----"),
        };
        assert!(!format!("{inputs:?}").contains("pAssword0123456789"));
        let secret = identity_secret(&inputs);
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels[BROKER_IDENTITY_LABEL], "main");
        let data = secret.data.clone().unwrap();
        assert_eq!(data[URL_KEY].0, b"nats://main-client.shop.svc:4222");
        assert_eq!(data[PASSWORD_KEY].0, b"pAssword0123456789");
        assert_eq!(data[NAMESPACE_KEY].0, b"shop");
        assert_eq!(data[CA_KEY].0, b"-----BEGIN CERTIFICATE-----");
        let user = client_user(&secret).unwrap();
        assert_eq!(user.user, "p__shop__order-api");
        assert_eq!(user.password_hash, hash);
        assert_eq!(user.permissions, permissions);

        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove(HASH_KEY);
        assert!(client_user(&broken).unwrap_err().contains(HASH_KEY));
    }

    #[test]
    fn workers_take_their_credentials_from_the_identity_secret() {
        use k8s_openapi::api::apps::v1::DeploymentSpec;
        use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
        let env = |name: &str| EnvVar {
            name: name.into(),
            value: Some("x".into()),
            value_from: None,
        };
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![
                            Container {
                                name: "worker".into(),
                                env: Some(vec![
                                    env("SLUICE_GROUP"),
                                    env(USER_KEY),
                                    env(PASSWORD_KEY),
                                ]),
                                ..Container::default()
                            },
                            Container {
                                name: "sidecar".into(),
                                env: Some(vec![env("OTHER")]),
                                ..Container::default()
                            },
                        ],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        use_identity(&mut d, "billing-broker-identity", "$2b$04$hash");
        let template = &d.spec.as_ref().unwrap().template;
        let pod = template.spec.as_ref().unwrap();
        let worker_env = pod.containers[0].env.as_ref().unwrap();
        for key in [USER_KEY, PASSWORD_KEY] {
            let matching: Vec<_> = worker_env.iter().filter(|e| e.name == key).collect();
            assert_eq!(matching.len(), 1, "{key}");
            let r = matching[0]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(
                (r.name.as_str(), r.key.as_str()),
                ("billing-broker-identity", key)
            );
        }
        assert_eq!(pod.containers[1].env.as_ref().unwrap().len(), 1);
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        let first = annotations[IDENTITY_HASH_ANNOTATION].clone();
        use_identity(&mut d, "billing-broker-identity", "$2b$04$other");
        let template = &d.spec.as_ref().unwrap().template;
        assert_ne!(
            template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[IDENTITY_HASH_ANNOTATION],
            first
        );
    }
}
