//! The worker Deployment of a ConsumerGroup, built from `spec.template` (pure).
//!
//! The operator adds the worker environment of the architecture contract
//! (`SLUICE_BROKER_URL`, `SLUICE_BROKER_USER`/`PASSWORD` from the broker's credentials
//! Secret, `SLUICE_NAMESPACE`, `SLUICE_GROUP`, `SLUICE_MEMBER_ID` = pod name) to every
//! container, replacing variables of the same name, and a termination grace period long
//! enough to drain in-flight messages (ack wait + 10s).
//!
//! Workers are observable by default ([`observable`]): the first container (the worker, as
//! for `sluice dev`) gets `SLUICE_METRICS_ADDR=0.0.0.0:9090`, on which the SDK serves
//! `/metrics`, `/healthz` and `/readyz`, a container port named `metrics`, a readiness probe
//! on `/readyz` (ready once the worker joined its group) and a liveness probe on `/healthz`.
//! What the template sets wins: its own `SLUICE_METRICS_ADDR` (whose port is then used), its
//! own probes, its own port. A template that sets `SLUICE_METRICS_ADDR` to the empty string
//! (a worker not built on the SDK) gets no port and no probes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodTemplateSpec, Probe, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::InvalidField;

/// Label carrying the group name on worker Deployments and pods.
pub const GROUP_LABEL: &str = "sluice.dev/group";
/// Extra time on top of the ack wait that workers get to shut down.
pub const DRAIN_MARGIN_SECS: i64 = 10;
/// Variable the worker SDK serves `/metrics`, `/healthz` and `/readyz` on.
pub const METRICS_ADDR_ENV: &str = "SLUICE_METRICS_ADDR";
/// Port of the workers' metrics endpoint unless the template chooses one.
pub const METRICS_PORT: i32 = 9090;
/// Name of the workers' metrics container port (the chart's PodMonitor scrapes it).
pub const METRICS_PORT_NAME: &str = "metrics";

/// Everything the worker Deployment is built from.
#[derive(Debug, Clone)]
pub struct WorkerInputs<'a> {
    /// Namespace of the group.
    pub namespace: &'a str,
    /// Group name.
    pub group: &'a str,
    /// Comma-separated broker URLs.
    pub broker_urls: &'a str,
    /// Secret with `user` and `password`, when the broker requires credentials.
    pub credentials_secret: Option<&'a str>,
    /// Secret whose `ca.crt` the workers verify the broker's TLS certificate with
    /// (`<broker>-tls`), when the broker serves TLS: injected as `SLUICE_BROKER_CA`.
    pub ca_secret: Option<&'a str>,
    /// The group's ack wait, in milliseconds.
    pub ack_wait_ms: u64,
    /// Replicas to run.
    pub replicas: i32,
    /// The ConsumerGroup that owns the Deployment.
    pub owner: OwnerReference,
    /// The decoded `spec.template`.
    pub template: PodTemplateSpec,
}

/// Name of a group's worker Deployment.
pub fn deployment_name(group: &str) -> String {
    format!("{group}-workers")
}

/// The pull policy Kubernetes defaults a container of `image` to: `Always` for the tag
/// `latest` or no tag (and no digest), else `IfNotPresent`. The operator sets it itself, so
/// the field is its own: the API server's default is otherwise fixed by the first image and
/// never follows a later tag change (a `:latest` Deployment moved to `:1.2` would keep pulling).
pub fn default_pull_policy(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    let latest = if image.contains('@') {
        false
    } else {
        match name.rsplit_once(':') {
            Some((_, tag)) => tag == "latest",
            None => true,
        }
    };
    if latest { "Always" } else { "IfNotPresent" }.to_string()
}

/// Builds the worker Deployment; fails when the template cannot run (no containers, a
/// container without image).
pub fn worker_deployment(inputs: WorkerInputs<'_>) -> Result<Deployment, InvalidField> {
    let env = worker_env(&inputs);
    let mut template = inputs.template;
    let mut pod_spec = template.spec.take().ok_or_else(|| {
        InvalidField::new("template.spec", "is required: give the worker containers")
    })?;
    if pod_spec.containers.is_empty() {
        return Err(InvalidField::new(
            "template.spec.containers",
            "needs at least one container",
        ));
    }
    for (i, c) in pod_spec.containers.iter().enumerate() {
        if c.image.as_deref().is_none_or(str::is_empty) {
            return Err(InvalidField::new(
                format!("template.spec.containers[{i}].image"),
                format!("container {:?} has no image", c.name),
            ));
        }
    }

    for c in &mut pod_spec.containers {
        let mut vars: Vec<EnvVar> = c
            .env
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !env.iter().any(|o| o.name == v.name))
            .collect();
        vars.extend(env.iter().cloned());
        c.env = Some(vars);
        if c.image_pull_policy.is_none() {
            c.image_pull_policy = c.image.as_deref().map(default_pull_policy);
        }
    }
    if let Some(worker) = pod_spec.containers.first_mut() {
        observable(worker);
    }
    for c in pod_spec.init_containers.iter_mut().flatten() {
        if c.image_pull_policy.is_none() {
            c.image_pull_policy = c.image.as_deref().map(default_pull_policy);
        }
    }
    let drain = i64::try_from(inputs.ack_wait_ms.div_ceil(1000))
        .unwrap_or(i64::MAX)
        .saturating_add(DRAIN_MARGIN_SECS);
    pod_spec.termination_grace_period_seconds = Some(
        pod_spec
            .termination_grace_period_seconds
            .map_or(drain, |t| t.max(drain)),
    );

    let selector = selector_labels(inputs.group);
    let mut pod_meta = template.metadata.take().unwrap_or_default();
    let mut pod_labels = pod_meta.labels.take().unwrap_or_default();
    pod_labels.extend(selector.clone());
    pod_meta.labels = Some(pod_labels);

    let mut labels = selector.clone();
    labels.insert("app.kubernetes.io/name".into(), "sluice-worker".into());
    labels.insert("app.kubernetes.io/instance".into(), inputs.group.into());

    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(inputs.group)),
            namespace: Some(inputs.namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![inputs.owner]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(inputs.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// Makes the worker container observable (see the [module doc](self)): metrics address,
/// `metrics` port, readiness and liveness probes, each only where the template has none.
pub fn observable(container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    let port = match env.iter().find(|v| v.name == METRICS_ADDR_ENV) {
        None => {
            env.push(plain(METRICS_ADDR_ENV, &format!("0.0.0.0:{METRICS_PORT}")));
            Some(METRICS_PORT)
        }
        // `:9100`, `0.0.0.0:9100`, `[::]:9100`; empty = no endpoint; from a Secret or field:
        // unknown, so nothing is added.
        Some(v) => v
            .value
            .as_deref()
            .and_then(|a| a.trim().rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<i32>().ok())
            .filter(|p| (1..=65535).contains(p)),
    };
    let Some(port) = port else {
        return;
    };
    let ports = container.ports.get_or_insert_with(Vec::new);
    let declared = ports
        .iter()
        .any(|p| p.container_port == port || p.name.as_deref() == Some(METRICS_PORT_NAME));
    if !declared {
        ports.push(ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    let probe = |path: &str, initial_delay: i32, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    };
    if container.readiness_probe.is_none() {
        container.readiness_probe = Some(probe("/readyz", 0, 5));
    }
    if container.liveness_probe.is_none() {
        container.liveness_probe = Some(probe("/healthz", 10, 10));
    }
}

/// Labels selecting a group's worker pods.
pub fn selector_labels(group: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (GROUP_LABEL.to_string(), group.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "sluice-operator".to_string(),
        ),
    ])
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn worker_env(inputs: &WorkerInputs<'_>) -> Vec<EnvVar> {
    let mut env = vec![
        plain("SLUICE_BROKER_URL", inputs.broker_urls),
        plain("SLUICE_NAMESPACE", inputs.namespace),
        plain("SLUICE_GROUP", inputs.group),
        EnvVar {
            name: "SLUICE_MEMBER_ID".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
    ];
    if let Some(secret) = inputs.credentials_secret {
        env.push(from_secret("SLUICE_BROKER_USER", secret, "user"));
        env.push(from_secret("SLUICE_BROKER_PASSWORD", secret, "password"));
    }
    if let Some(secret) = inputs.ca_secret {
        env.push(from_secret(
            sluice_broker::tls::BROKER_CA_ENV,
            secret,
            crate::broker_cluster::CA_CERT_KEY,
        ));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::PodTemplate;

    fn template(yaml: &str) -> PodTemplateSpec {
        let t: PodTemplate = serde_yaml::from_str(yaml).unwrap();
        t.decode("template").unwrap()
    }

    fn inputs(t: PodTemplateSpec) -> WorkerInputs<'static> {
        WorkerInputs {
            namespace: "shop",
            group: "billing",
            broker_urls: "nats://main-client.shop.svc:4222",
            credentials_secret: Some("main-credentials"),
            ca_secret: Some("main-tls"),
            ack_wait_ms: 45_000,
            replicas: 2,
            owner: OwnerReference {
                api_version: "sluice.dev/v1alpha1".into(),
                kind: "ConsumerGroup".into(),
                name: "billing".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            template: t,
        }
    }

    #[test]
    fn pull_policy_follows_the_tag_unless_the_template_sets_one() {
        for (image, policy) in [
            ("example/worker:latest", "Always"),
            ("example/worker", "Always"),
            ("registry:5000/worker", "Always"),
            ("registry:5000/worker:1.2", "IfNotPresent"),
            ("example/worker:1.2", "IfNotPresent"),
            ("example/worker@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
        let latest = worker_deployment(inputs(template(
            "spec: {containers: [{name: w, image: 'img:latest'}]}\n",
        )))
        .unwrap();
        let pod = latest.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        // The tag moves on: the policy follows (the operator owns the field).
        let pinned = worker_deployment(inputs(template(
            "spec: {containers: [{name: w, image: 'img:1.2'}]}\n",
        )))
        .unwrap();
        let pod = pinned.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        let explicit = worker_deployment(inputs(template(
            "spec: {containers: [{name: w, image: 'img:latest', imagePullPolicy: Never}]}\n",
        )))
        .unwrap();
        let pod = explicit.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn deployment_carries_env_grace_period_labels_and_owner() {
        let t = template(
            "metadata: {labels: {team: pay}}\nspec:\n  containers:\n  - name: w\n    image: img:1\n    env: [{name: SLUICE_GROUP, value: wrong}, {name: KEEP, value: x}]\n",
        );
        let d = worker_deployment(inputs(t)).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("billing-workers"));
        assert_eq!(
            d.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(55));
        let env = pod.containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().filter(|v| v.name == n).collect::<Vec<_>>();
        assert_eq!(
            get("SLUICE_GROUP").len(),
            1,
            "operator value replaces the template's"
        );
        assert_eq!(get("SLUICE_GROUP")[0].value.as_deref(), Some("billing"));
        assert_eq!(get("KEEP")[0].value.as_deref(), Some("x"));
        assert_eq!(
            get("SLUICE_BROKER_URL")[0].value.as_deref(),
            Some("nats://main-client.shop.svc:4222")
        );
        let user = get("SLUICE_BROKER_USER")[0]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (user.name.as_str(), user.key.as_str()),
            ("main-credentials", "user")
        );
        let ca = get("SLUICE_BROKER_CA")[0]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!((ca.name.as_str(), ca.key.as_str()), ("main-tls", "ca.crt"));
        let member = get("SLUICE_MEMBER_ID")[0]
            .value_from
            .clone()
            .unwrap()
            .field_ref
            .unwrap();
        assert_eq!(member.field_path, "metadata.name");
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["team"], "pay");
        assert_eq!(labels[GROUP_LABEL], "billing");
        assert_eq!(spec.selector.match_labels.unwrap()[GROUP_LABEL], "billing");
    }

    fn worker(d: Deployment) -> Container {
        d.spec.unwrap().template.spec.unwrap().containers[0].clone()
    }

    fn http_probe(p: &Option<Probe>) -> (String, IntOrString) {
        let get = p.clone().unwrap().http_get.unwrap();
        (get.path.unwrap(), get.port)
    }

    #[test]
    fn workers_are_observable_by_default() {
        let t = template(
            "spec:\n  containers:\n  - {name: w, image: img:1, ports: [{name: http, containerPort: 8080}]}\n  - {name: sidecar, image: proxy:1}\n",
        );
        let d = worker_deployment(inputs(t)).unwrap();
        let pod = d.spec.clone().unwrap().template.spec.unwrap();
        let w = worker(d);
        let env = w.env.clone().unwrap();
        let addr: Vec<_> = env.iter().filter(|v| v.name == METRICS_ADDR_ENV).collect();
        assert_eq!(addr.len(), 1);
        assert_eq!(addr[0].value.as_deref(), Some("0.0.0.0:9090"));
        let ports = w.ports.clone().unwrap();
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert_eq!(ports[1].name.as_deref(), Some("metrics"));
        assert_eq!(ports[1].container_port, 9090);
        assert_eq!(
            http_probe(&w.readiness_probe),
            ("/readyz".into(), IntOrString::Int(9090))
        );
        assert_eq!(
            http_probe(&w.liveness_probe),
            ("/healthz".into(), IntOrString::Int(9090))
        );
        // Only the worker container: a sidecar keeps its own ports and has no probes.
        let sidecar = &pod.containers[1];
        assert!(sidecar.ports.is_none() && sidecar.readiness_probe.is_none());
        assert!(
            !sidecar
                .env
                .iter()
                .flatten()
                .any(|v| v.name == METRICS_ADDR_ENV)
        );
    }

    #[test]
    fn the_templates_address_port_and_probes_win() {
        let t = template(
            "spec:\n  containers:\n  - name: w\n    image: img:1\n    env: [{name: SLUICE_METRICS_ADDR, value: ':9100'}]\n    livenessProbe: {tcpSocket: {port: 7000}}\n",
        );
        let w = worker(worker_deployment(inputs(t)).unwrap());
        let env = w.env.clone().unwrap();
        let addr: Vec<_> = env.iter().filter(|v| v.name == METRICS_ADDR_ENV).collect();
        assert_eq!(addr.len(), 1);
        assert_eq!(addr[0].value.as_deref(), Some(":9100"));
        assert_eq!(w.ports.clone().unwrap()[0].container_port, 9100);
        assert_eq!(
            http_probe(&w.readiness_probe),
            ("/readyz".into(), IntOrString::Int(9100))
        );
        let liveness = w.liveness_probe.clone().unwrap();
        assert!(liveness.http_get.is_none() && liveness.tcp_socket.is_some());

        // A port already declared (by number) is not declared twice.
        let t = template(
            "spec:\n  containers:\n  - {name: w, image: img:1, ports: [{name: prom, containerPort: 9090}]}\n",
        );
        let w = worker(worker_deployment(inputs(t)).unwrap());
        assert_eq!(w.ports.unwrap().len(), 1);
    }

    #[test]
    fn an_empty_metrics_address_opts_out() {
        let t = template(
            "spec:\n  containers:\n  - name: w\n    image: img:1\n    env: [{name: SLUICE_METRICS_ADDR, value: ''}]\n",
        );
        let w = worker(worker_deployment(inputs(t)).unwrap());
        assert!(w.ports.is_none());
        assert!(w.readiness_probe.is_none() && w.liveness_probe.is_none());
        let env = w.env.unwrap();
        assert_eq!(
            env.iter()
                .filter(|v| v.name == METRICS_ADDR_ENV)
                .map(|v| v.value.as_deref())
                .collect::<Vec<_>>(),
            [Some("")]
        );
    }

    #[test]
    fn longer_grace_period_in_template_is_kept() {
        let t = template(
            "spec:\n  terminationGracePeriodSeconds: 600\n  containers: [{name: w, image: i}]\n",
        );
        let d = worker_deployment(inputs(t)).unwrap();
        assert_eq!(
            d.spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .termination_grace_period_seconds,
            Some(600)
        );
    }

    #[test]
    fn unusable_templates_name_the_field() {
        for (yaml, field) in [
            ("metadata: {}\n", "template.spec"),
            ("spec: {containers: []}\n", "template.spec.containers"),
            (
                "spec: {containers: [{name: w}]}\n",
                "template.spec.containers[0].image",
            ),
        ] {
            let err = worker_deployment(inputs(template(yaml))).unwrap_err();
            assert_eq!(err.field, field, "{yaml}");
        }
    }
}
