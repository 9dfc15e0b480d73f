//! The StatefulSet that runs the nats-server pods, and its PodDisruptionBudget.
//!
//! Probes (nats-server's `/healthz` on the monitor port), as in the NATS project's own chart:
//! - startup: the full `/healthz`, which also requires this server's JetStream meta state,
//!   streams and consumers to be current. A pod is not Ready before it has started, so a
//!   rolling update waits for the restarted server to catch up and never takes down a second
//!   replica while the first is still behind;
//! - readiness: `/healthz?js-server-only=true` (the server and JetStream are up, without the
//!   cluster-wide checks). With the full `/healthz` here every server would turn NotReady
//!   during a meta-leader election or a stream catch-up, emptying the client Service and
//!   blocking every drain through the PodDisruptionBudget;
//! - liveness: `/healthz?js-enabled-only=true`, which only says the server is up with
//!   JetStream on. Liveness must not depend on the rest of the cluster, or losing quorum
//!   would restart every healthy pod.
//!
//! Note: Kubernetes forbids changing `volumeClaimTemplates` in place, so a storage size or
//! class change needs the PVCs resized directly (or the StatefulSet re-created with orphaned
//! pods); the reconciler must not try to apply a changed template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::route_url_env;
use super::config::{
    CONFIG_DIR, ENV_OPERATOR_PASSWORD, ENV_OPERATOR_USER, ENV_POD_NAME, ENV_ROUTE_PASSWORD,
    ENV_ROUTE_USER, ENV_WORKER_PASSWORD, ENV_WORKER_USER, LAME_DUCK_DURATION_SECS,
    LAME_DUCK_GRACE_SECS, NATS_CONF_KEY, PID_DIR, PID_FILE, STORE_DIR, config_hash,
};
use super::credentials::{
    OPERATOR_PASSWORD_KEY, OPERATOR_USER_KEY, PASSWORD_KEY, ROUTE_PASSWORD_KEY, ROUTE_USER_KEY,
    USER_KEY,
};
use super::labels::{object_meta, selector_labels, standard_labels};
use super::{BrokerCluster, CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT};

/// Pod-template annotation holding the hash of nats.conf; a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "sluice.dev/config-hash";
/// UID and GID nats-server runs as (the official image has no fixed non-root user).
const RUN_AS_ID: i64 = 1000;
/// Time for lame-duck mode to move every client away, plus a margin for the final flush.
const TERMINATION_GRACE_SECS: i64 = LAME_DUCK_GRACE_SECS + LAME_DUCK_DURATION_SECS + 20;
const DATA_VOLUME: &str = "data";
const CONFIG_VOLUME: &str = "config";
const TLS_VOLUME: &str = "tls";
const PID_VOLUME: &str = "pid";

/// The StatefulSet `<name>`: `replicas` nats-server pods with one JetStream volume each.
pub fn stateful_set(cluster: &BrokerCluster) -> StatefulSet {
    let selector = selector_labels(cluster);
    StatefulSet {
        metadata: object_meta(cluster, cluster.name().to_string()),
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::from(cluster.replicas())),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            service_name: Some(cluster.headless_service_name()),
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Data is never deleted by scaling or by deleting the StatefulSet.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            template: pod_template(cluster),
            volume_claim_templates: Some(vec![volume_claim_template(cluster, selector)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn pod_template(cluster: &BrokerCluster) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(standard_labels(cluster)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_string(),
                config_hash(cluster),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![nats_container(cluster)],
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECS),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS_ID),
                run_as_group: Some(RUN_AS_ID),
                fs_group: Some(RUN_AS_ID),
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            affinity: Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 100,
                            pod_affinity_term: PodAffinityTerm {
                                topology_key: "kubernetes.io/hostname".to_string(),
                                label_selector: Some(LabelSelector {
                                    match_labels: Some(selector_labels(cluster)),
                                    ..LabelSelector::default()
                                }),
                                ..PodAffinityTerm::default()
                            },
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            }),
            volumes: Some(pod_volumes(cluster)),
            ..PodSpec::default()
        }),
    }
}

/// The config map, the pid directory, the users Secret and, with TLS, the `<name>-tls` Secret.
fn pod_volumes(cluster: &BrokerCluster) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: cluster.config_map_name(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: PID_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        super::users::users_volume(cluster),
    ];
    if cluster.params().tls.enabled() {
        volumes.push(Volume {
            name: TLS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(super::tls_secret_name(cluster.name())),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        ..SeccompProfile::default()
    }
}

fn nats_container(cluster: &BrokerCluster) -> Container {
    Container {
        name: "nats".to_string(),
        image: Some(cluster.image()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec![
            "nats-server".to_string(),
            "--config".to_string(),
            format!("{CONFIG_DIR}/{NATS_CONF_KEY}"),
        ]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("cluster", CLUSTER_PORT),
            container_port("monitor", MONITOR_PORT),
        ]),
        env: Some(container_env(cluster)),
        resources: cluster.params().resources.clone(),
        startup_probe: Some(Probe {
            failure_threshold: Some(90),
            ..http_probe("/healthz", 10)
        }),
        readiness_probe: Some(Probe {
            failure_threshold: Some(3),
            ..http_probe("/healthz?js-server-only=true", 10)
        }),
        liveness_probe: Some(Probe {
            failure_threshold: Some(3),
            ..http_probe("/healthz?js-enabled-only=true", 30)
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "nats-server".to_string(),
                        "--signal".to_string(),
                        format!("ldm={PID_FILE}"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(container_mounts(cluster)),
        ..Container::default()
    }
}

/// The config, pid, data and users mounts and, with TLS, the certificates at [`super::TLS_DIR`].
fn container_mounts(cluster: &BrokerCluster) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: CONFIG_VOLUME.to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: PID_VOLUME.to_string(),
            mount_path: PID_DIR.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: STORE_DIR.to_string(),
            ..VolumeMount::default()
        },
        super::users::users_volume_mount(),
    ];
    if cluster.params().tls.enabled() {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_string(),
            mount_path: super::TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The container's environment: the pod name, the credentials from the Secret, then the
/// route URLs, which reference the route credentials with `$(VAR)` and so must follow them.
fn container_env(cluster: &BrokerCluster) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar {
            name: ENV_POD_NAME.to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_string(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        secret_env(cluster, ENV_OPERATOR_USER, OPERATOR_USER_KEY),
        secret_env(cluster, ENV_OPERATOR_PASSWORD, OPERATOR_PASSWORD_KEY),
        secret_env(cluster, ENV_WORKER_USER, USER_KEY),
        secret_env(cluster, ENV_WORKER_PASSWORD, PASSWORD_KEY),
        secret_env(cluster, ENV_ROUTE_USER, ROUTE_USER_KEY),
        secret_env(cluster, ENV_ROUTE_PASSWORD, ROUTE_PASSWORD_KEY),
    ];
    env.extend(
        route_url_env(cluster)
            .into_iter()
            .map(|(name, value)| EnvVar {
                name,
                value: Some(value),
                ..EnvVar::default()
            }),
    );
    env
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn secret_env(cluster: &BrokerCluster, var: &str, key: &str) -> EnvVar {
    EnvVar {
        name: var.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: cluster.credentials_secret_name(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("monitor".to_string()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(5),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn volume_claim_template(
    cluster: &BrokerCluster,
    selector: BTreeMap<String, String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            // Only immutable labels: a StatefulSet's claim templates cannot change later.
            labels: Some(selector),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: cluster.params().storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    cluster.params().storage_size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// PodDisruptionBudget `<name>`: voluntary disruptions (drains, evictions) take at most one
/// server at a time, so a 3- or 5-server cluster keeps its Raft majority. A single-server
/// broker has no redundancy: a drain takes it down.
pub fn pod_disruption_budget(cluster: &BrokerCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(cluster, cluster.name().to_string()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::super::test_support::cluster;
    use super::super::{BrokerClusterParams, SyncPolicy};
    use super::*;

    fn pod_spec(sts: &StatefulSet) -> &PodSpec {
        sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn probe_path(p: &Option<Probe>) -> String {
        let p = p.as_ref().unwrap();
        let get = p.http_get.as_ref().unwrap();
        assert_eq!(get.port, IntOrString::String("monitor".into()));
        get.path.clone().unwrap()
    }

    #[test]
    fn stateful_set_shape() {
        for replicas in [1, 3, 5] {
            let sts = stateful_set(&cluster(replicas));
            assert_eq!(sts.metadata.name.as_deref(), Some("main"));
            let spec = sts.spec.as_ref().unwrap();
            assert_eq!(spec.replicas, Some(i32::from(replicas)));
            assert_eq!(spec.service_name.as_deref(), Some("main-headless"));
            assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
            let retention = spec
                .persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap();
            assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
            assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
            // The selector matches the pod labels.
            let pod_labels = spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
                assert_eq!(pod_labels.get(k), Some(v), "selector label {k}");
            }
        }
    }

    #[test]
    fn container_ports_image_and_command() {
        let sts = stateful_set(&cluster(3));
        let c = &pod_spec(&sts).containers[0];
        assert_eq!(c.image.as_deref(), Some("nats:2.15.1-alpine"));
        assert_eq!(
            c.command.as_ref().unwrap(),
            &vec!["nats-server", "--config", "/etc/nats-config/nats.conf"]
        );
        let ports: Vec<(&str, i32)> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![("client", 4222), ("cluster", 6222), ("monitor", 8222)]
        );
    }

    #[test]
    fn probes_use_jetstream_health_variants() {
        let sts = stateful_set(&cluster(3));
        let c = &pod_spec(&sts).containers[0];
        // The upstream split: startup waits for the server to be current, readiness does not
        // depend on the cluster's meta leader, liveness only on this server.
        assert_eq!(probe_path(&c.startup_probe), "/healthz");
        assert_eq!(
            probe_path(&c.readiness_probe),
            "/healthz?js-server-only=true"
        );
        assert_eq!(
            probe_path(&c.liveness_probe),
            "/healthz?js-enabled-only=true"
        );
        // A slow JetStream recovery (large streams) must not be killed by the startup probe:
        // 90 x 10s = 15 minutes.
        let startup = c.startup_probe.as_ref().unwrap();
        assert_eq!(startup.failure_threshold, Some(90));
        assert_eq!(startup.period_seconds, Some(10));
    }

    #[test]
    fn lame_duck_pre_stop_and_grace_period() {
        let sts = stateful_set(&cluster(3));
        let pod = pod_spec(&sts);
        let c = &pod.containers[0];
        let cmd = c
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .clone()
            .unwrap();
        assert_eq!(
            cmd,
            vec!["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"]
        );
        // Grace must outlast lame-duck grace (10s) + duration (30s).
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        // The pid file lives on a writable emptyDir mounted where nats.conf puts it.
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "pid" && m.mount_path == "/var/run/nats")
        );
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "pid" && v.empty_dir.is_some())
        );
    }

    #[test]
    fn restricted_security_context() {
        let sts = stateful_set(&cluster(3));
        let pod = pod_spec(&sts);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(1000));
        assert_eq!(psc.fs_group, Some(1000));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
                &vec!["ALL".to_string()]
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            assert_ne!(sc.privileged, Some(true));
        }
    }

    #[test]
    fn credentials_come_from_the_secret() {
        let sts = stateful_set(&cluster(3));
        let env = pod_spec(&sts).containers[0].env.clone().unwrap();
        let from_secret: Vec<(String, String, String)> = env
            .iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), r.name.clone(), r.key.clone()))
            })
            .collect();
        assert_eq!(
            from_secret,
            vec![
                (
                    "SLUICE_OPERATOR_USER".into(),
                    "main-credentials".into(),
                    "operator-user".into()
                ),
                (
                    "SLUICE_OPERATOR_PASSWORD".into(),
                    "main-credentials".into(),
                    "operator-password".into()
                ),
                (
                    "SLUICE_WORKER_USER".into(),
                    "main-credentials".into(),
                    "user".into()
                ),
                (
                    "SLUICE_WORKER_PASSWORD".into(),
                    "main-credentials".into(),
                    "password".into()
                ),
                (
                    "SLUICE_ROUTE_USER".into(),
                    "main-credentials".into(),
                    "route-user".into()
                ),
                (
                    "SLUICE_ROUTE_PASSWORD".into(),
                    "main-credentials".into(),
                    "route-password".into()
                ),
            ]
        );
        // Route URLs are literal values that only reference the route credentials, and
        // come after them (the kubelet expands `$(VAR)` from earlier variables only).
        let literal: Vec<(String, String)> = env
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        assert_eq!(literal.len(), 3);
        let password_at = env
            .iter()
            .position(|e| e.name == "SLUICE_ROUTE_PASSWORD")
            .unwrap();
        for (i, (name, value)) in literal.iter().enumerate() {
            assert_eq!(name, &format!("SLUICE_ROUTE_URL_{i}"));
            assert!(
                value.starts_with("nats://$(SLUICE_ROUTE_USER):$(SLUICE_ROUTE_PASSWORD)@main-"),
                "{value}"
            );
            let at = env.iter().position(|e| &e.name == name).unwrap();
            assert!(at > password_at, "{name} before the credentials it uses");
        }
        let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
        assert_eq!(
            pod_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
        let single = stateful_set(&cluster(1));
        let single_env = pod_spec(&single).containers[0].env.clone().unwrap();
        assert!(
            single_env.iter().all(|e| e.value.is_none()),
            "no literal values without routes"
        );
    }

    #[test]
    fn anti_affinity_prefers_distinct_hosts() {
        let sts = stateful_set(&cluster(3));
        let anti = pod_spec(&sts)
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let preferred = anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        assert_eq!(
            preferred[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            preferred[0]
                .pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &selector_labels(&cluster(3))
        );
    }

    #[test]
    fn volume_claim_template_storage_and_resources() {
        let mut p = BrokerClusterParams::new("ns", "b", 3);
        p.storage_size = Quantity("20Gi".into());
        p.storage_class = Some("fast-ssd".into());
        p.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("500m".into()))])),
            ..ResourceRequirements::default()
        });
        let c = BrokerCluster::new(p).unwrap();
        let sts = stateful_set(&c);
        let spec = sts.spec.as_ref().unwrap();
        let vct = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(vct.metadata.name.as_deref(), Some("data"));
        let vspec = vct.spec.as_ref().unwrap();
        assert_eq!(vspec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            vspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("20Gi".into())
        );
        assert_eq!(
            vspec.access_modes.as_ref().unwrap(),
            &vec!["ReadWriteOnce".to_string()]
        );
        // Claim template labels must not change on upgrades: no version label.
        assert!(
            !vct.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("app.kubernetes.io/version")
        );
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"],
            Quantity("500m".into())
        );
        assert!(
            container
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/data")
        );
    }

    #[test]
    fn config_change_changes_the_pod_template() {
        let hash = |c: &BrokerCluster| {
            stateful_set(c)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let mut p = BrokerClusterParams::new("ns", "b", 3);
        let before = hash(&BrokerCluster::new(p.clone()).unwrap());
        assert_eq!(before, hash(&BrokerCluster::new(p.clone()).unwrap()));
        p.sync_interval = SyncPolicy::Always;
        assert_ne!(before, hash(&BrokerCluster::new(p).unwrap()));
    }

    #[test]
    fn pdb_allows_one_disruption() {
        let pdb = pod_disruption_budget(&cluster(5));
        assert_eq!(pdb.metadata.name.as_deref(), Some("main"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(spec.min_available.is_none());
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            selector_labels(&cluster(5))
        );
    }
}
