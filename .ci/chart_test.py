#!/usr/bin/env python3
"""Tests of the Helm chart charts/sluice with real Helm (helm-python-sdk: Helm v4's Go code).

Run from anywhere:  python3 .ci/chart_test.py
Needs: pip install helm-python-sdk pyyaml. No cluster, no network.

Checks: lint without errors; schema rejects bad values; renders with default values and with
variants (defaultBroker, serviceMonitor + workers PodMonitor, networkPolicy, watchNamespaces,
logFormat); RBAC grants the operator exactly what its code calls (every rule listed), aggregated edit/view roles; RBAC is
least-privilege (no `*`, `<plural>/status` and `<plural>/finalizers` for each Sluice kind);
every pod spec meets the restricted Pod Security Standard; charts/sluice/crds/ equals crds/.
Prints "N passed, N failed" and exits non-zero on any failure.
"""

from __future__ import annotations

import filecmp
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "sluice"
PLURALS = ["brokers", "topics", "queues", "consumergroups", "deadletterqueues"]
RELEASE = "sluice"
NAMESPACE = "sluice-system"
KUBE_VERSION = "v1.28.0"  # the oldest API server Sluice supports

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "defaultBroker": {"defaultBroker": {"enabled": True, "replicas": 5, "storage": {"size": "20Gi", "class": "fast"}}},
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "jsonLogs": {"logFormat": "json"},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "folder": "Sluice"},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "dlqDepthThreshold": 7},
    },
    "networkPolicy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    },
    "watchNamespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "everything": {
        "defaultBroker": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "watchNamespaces": ["team-a"],
        "otel": {"endpoint": "http://otel-collector:4317"},
        "replicaCount": 2,
    },
}

_results: list[tuple[str, str | None]] = []


def check(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Registers and runs a test; an AssertionError or any exception is a failure."""

    def run(fn: Callable[[], None]) -> Callable[[], None]:
        try:
            fn()
            _results.append((name, None))
            print(f"PASS {name}")
        except AssertionError as e:
            _results.append((name, str(e) or "assertion failed"))
            print(f"FAIL {name}: {e}")
        except Exception:  # noqa: BLE001 - report, keep going
            _results.append((name, traceback.format_exc()))
            print(f"FAIL {name}:\n{traceback.format_exc()}")
        return fn

    return run


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Renders the chart and returns every object of every manifest (NOTES.txt excluded)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert "kind" in doc and "apiVersion" in doc, f"{path}: object without kind/apiVersion: {doc}"
                objects.append(doc)
    return objects


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def rbac_rules(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for o in objects:
        if o["kind"] in ("ClusterRole", "Role"):
            for rule in o.get("rules") or []:
                out.append((f"{o['kind']}/{o['metadata']['name']}", rule))
    return out


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
    specs = [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]) for o in objects if o["kind"] in kinds]
    specs += [(f"Pod/{o['metadata']['name']}", o["spec"]) for o in objects if o["kind"] == "Pod"]
    return specs


def assert_restricted(where: str, spec: dict[str, Any]) -> None:
    """The restricted Pod Security Standard (the fields the chart controls)."""
    psc = spec.get("securityContext") or {}
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), f"{where}: host namespaces"
    for v in spec.get("volumes") or []:
        assert "hostPath" not in v, f"{where}: hostPath volume {v['name']}"
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        csc = c.get("securityContext") or {}
        cw = f"{where} container {c['name']}"
        run_as_non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        assert run_as_non_root is True, f"{cw}: runAsNonRoot must be true (got {run_as_non_root!r})"
        run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
        assert run_as_user != 0, f"{cw}: runAsUser 0"
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), f"{cw}: seccompProfile.type must be RuntimeDefault (got {seccomp!r})"
        assert csc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation must be false"
        caps = csc.get("capabilities") or {}
        assert caps.get("drop") == ["ALL"], f"{cw}: capabilities.drop must be [ALL] (got {caps.get('drop')!r})"
        assert set(caps.get("add") or []) <= {"NET_BIND_SERVICE"}, f"{cw}: adds capabilities {caps.get('add')}"
        assert csc.get("privileged") is not True, f"{cw}: privileged"
        assert csc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem should be true"
        for port in c.get("ports") or []:
            assert "hostPort" not in port, f"{cw}: hostPort"


# ---------------------------------------------------------------------------------------------


@check("lint: no errors (default values, Kubernetes 1.28)")
def _() -> None:
    report = helm.lint(CHART, kube_version=KUBE_VERSION)
    errors = report["errors"] + [m["error"] for m in report["messages"] if m["severity"] >= 3]
    assert not errors, f"lint errors: {errors}"
    assert report["total_charts_linted"] == 1, report


@check("lint: no errors or warnings with every variant")
def _() -> None:
    for name, values in VARIANTS.items():
        report = helm.lint(CHART, values, kube_version=KUBE_VERSION)
        problems = report["errors"] + [m["error"] for m in report["messages"] if m["severity"] >= 2]
        assert not problems, f"variant {name}: {problems}"


@check("schema: rejects invalid values")
def _() -> None:
    bad = [
        {"defaultBroker": {"replicas": 2}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
        {"unknownKey": True},
        {"networkPolicy": {"natsPort": 70000}},
        {"clusterDomain": "Not A Domain."},
        {"logFormat": "yaml"},
        {"prometheusRule": {"failureRatio": 2}},
        {"prometheusRule": {"lagGrowingFor": "soon"}},
        {"serviceMonitor": {"workers": {"enable": True}}},
    ]
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})
        for values in bad:
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError:
                continue
            raise AssertionError(f"schema accepted {values}")


@check("render: every variant renders, objects have names and the release namespace")
def _() -> None:
    for name, values in VARIANTS.items():
        objects = render(values)
        assert objects, f"variant {name} rendered nothing"
        for o in objects:
            assert o["metadata"].get("name"), f"variant {name}: {o['kind']} without a name"
            if o["kind"] not in ("ClusterRole", "ClusterRoleBinding") and o["kind"] not in ("Role", "RoleBinding"):
                assert o["metadata"].get("namespace") == NAMESPACE, f"variant {name}: {o['kind']}/{o['metadata']['name']} not in {NAMESPACE}"


@check("render: defaults = Deployment, ServiceAccount, metrics Service, cluster-wide RBAC, no optional objects")
def _() -> None:
    objects = render({})
    kinds = sorted(o["kind"] for o in objects)
    for kind in ("Deployment", "ServiceAccount", "Service", "ClusterRole", "ClusterRoleBinding"):
        assert kind in kinds, f"no {kind} in {kinds}"
    for kind in ("Broker", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"):
        assert kind not in kinds, f"{kind} rendered by default"
    svc = of_kind(objects, "Service")[0]
    assert svc["spec"]["ports"][0]["port"] == 8080 and svc["spec"]["ports"][0]["name"] == "http-metrics", svc


@check("deployment: operator args, env, probes on /healthz and /readyz :8080, resources")
def _() -> None:
    dep = of_kind(render({}), "Deployment")[0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["operator"], c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["RUST_LOG"]["value"], "RUST_LOG empty"
    assert env["SLUICE_LOG_FORMAT"]["value"] == "text", env["SLUICE_LOG_FORMAT"]
    assert env["SLUICE_LEADER_ELECTION"]["value"] == "true", "leader election must be on by default"
    assert env["SLUICE_CLUSTER_DOMAIN"]["value"] == "cluster.local", env["SLUICE_CLUSTER_DOMAIN"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env, "OTLP endpoint set without a value"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080}, ports
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("http", 8080), f"{probe}: {get}"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["resources"]
    assert c["image"].endswith(":0.1.0"), f"image tag should default to appVersion: {c['image']}"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == of_kind(render({}), "ServiceAccount")[0]["metadata"]["name"]
    # The operator's shutdown waits up to 20 s (--shutdown-grace default) for reconciles.
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30, dep["spec"]["template"]["spec"]


@check("deployment: watchNamespaces become repeated --namespace flags, OTLP endpoint is passed")
def _() -> None:
    c = of_kind(render(VARIANTS["everything"] | {"watchNamespaces": ["team-a", "team-b"]}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["operator", "--namespace", "team-a", "--namespace", "team-b"], c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317", env


@check("deployment: clusterDomain reaches the operator")
def _() -> None:
    c = of_kind(render({"clusterDomain": "corp.example"}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SLUICE_CLUSTER_DOMAIN"] == "corp.example", env


@check("security: every pod spec meets the restricted Pod Security Standard (all variants)")
def _() -> None:
    for name, values in VARIANTS.items():
        specs = pod_specs(render(values))
        assert specs, f"variant {name}: no pod specs"
        for where, spec in specs:
            assert_restricted(f"variant {name}: {where}", spec)


@check("rbac: no wildcard in apiGroups, resources, verbs or resourceNames (all variants)")
def _() -> None:
    for name, values in VARIANTS.items():
        rules = rbac_rules(render(values))
        assert rules, f"variant {name}: no RBAC rules"
        for where, rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                for item in rule.get(field) or []:
                    assert "*" not in str(item), f"variant {name}: {where} has {field} {item!r}"


def _grants(rules: list[tuple[str, dict[str, Any]]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
        for _, r in rules
    )


def _operator_grants(objects: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Every (apiGroup, resource, resourceName or "", verb) the operator's ServiceAccount is
    granted by the chart's (Cluster)Roles bound to it."""
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    bound = set()
    for b in objects:
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(
            s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"]
        ):
            bound.add((b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")))
    grants = set()
    for o in objects:
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        if (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace") if o["kind"] == "Role" else None) not in bound:
            continue
        for r in o.get("rules") or []:
            for g in r.get("apiGroups", []):
                for res in r.get("resources", []):
                    for name in r.get("resourceNames") or [""]:
                        for verb in r["verbs"]:
                            grants.add((g, res, name, verb))
    return grants


def _expected_grants(leader_election: bool) -> set[tuple[str, str, str, str]]:
    """What the operator's code calls (operator/src/controller, operator/src/service), nothing more:
    - sluice.dev kinds: watched (list, watch), read (get), finalizers added/removed by merge patch;
      status by merge patch; <kind>/finalizers update for blockOwnerDeletion owner references;
    - owned objects: server-side apply (get, then patch; create when the apply creates), watched by
      `.owns()` (list, watch) except NetworkPolicies and Certificates (applied every reconcile);
      deleted by garbage collection, except the worker Deployment of a group whose spec.template
      was removed (kube_api::delete_controlled in controller/autoscaling.rs): delete on deployments only;
    - Secrets: get by name, create (credentials), patch (route keys, TLS): no list, no watch;
    - pods: list (scale-down choice) and patch (pod-deletion-cost); events.k8s.io events;
    - CRDs: create, and get/patch of Sluice's own names; the leader Lease: get, create, update."""
    g: set[tuple[str, str, str, str]] = set()
    for p in PLURALS:
        g |= {("sluice.dev", p, "", v) for v in ("get", "list", "watch", "patch")}
        g.add(("sluice.dev", f"{p}/status", "", "patch"))
        g.add(("sluice.dev", f"{p}/finalizers", "", "update"))
    for group, res in (("apps", "statefulsets"), ("apps", "deployments"), ("", "services"), ("", "configmaps"),
                       ("policy", "poddisruptionbudgets")):
        g |= {(group, res, "", v) for v in ("get", "list", "watch", "create", "patch")}
    g.add(("apps", "deployments", "", "delete"))
    g |= {("", "secrets", "", v) for v in ("get", "create", "patch")}
    g |= {("networking.k8s.io", "networkpolicies", "", v) for v in ("get", "create", "patch")}
    g |= {("cert-manager.io", "certificates", "", v) for v in ("create", "patch")}
    g |= {("", "pods", "", v) for v in ("list", "patch")}
    g |= {("events.k8s.io", "events", "", v) for v in ("create", "patch")}
    g.add(("apiextensions.k8s.io", "customresourcedefinitions", "", "create"))
    g |= {("apiextensions.k8s.io", "customresourcedefinitions", f"{p}.sluice.dev", v) for p in PLURALS for v in ("get", "patch")}
    if leader_election:
        g |= {("coordination.k8s.io", "leases", "", v) for v in ("get", "create", "update")}
    return g


@check("rbac: the operator is granted exactly what its code calls (every rule listed, none extra)")
def _() -> None:
    for name, values, leader in (
        ("default", {}, True),
        ("watchNamespaces", VARIANTS["watchNamespaces"], True),
        ("noLeaderElection", {"leaderElection": {"enabled": False}}, False),
    ):
        have = _operator_grants(render(values))
        want = _expected_grants(leader)
        extra, missing = sorted(have - want), sorted(want - have)
        assert not extra, f"{name}: grants the code never uses: {extra}"
        assert not missing, f"{name}: lacks grants the code needs: {missing}"
    # Never: cluster-wide reads of Secrets, deleting anything but worker Deployments, updating
    # the custom resources.
    rules = rbac_rules(render({}))
    assert not _grants(rules, "", "secrets", "list") and not _grants(rules, "", "secrets", "watch"), "Secrets listable"
    deletes = [r for w, r in rules if not w.endswith(("-edit", "-view")) and "delete" in r["verbs"]]
    assert all(r["apiGroups"] == ["apps"] and r["resources"] == ["deployments"] for r in deletes), \
        f"the operator deletes only worker Deployments: {deletes}"


@check("rbac: aggregated edit/view ClusterRoles for the five kinds, switchable")
def _() -> None:
    objects = render({})
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole")}
    edit, view = roles[f"{RELEASE}-edit"], roles[f"{RELEASE}-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true", edit["metadata"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true", view["metadata"]
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in view["metadata"]["labels"]
    edit_kinds = set(edit["rules"][0]["resources"])
    assert edit_kinds == set(PLURALS), edit_kinds
    assert {"create", "update", "patch", "delete"} <= set(edit["rules"][0]["verbs"]), edit["rules"]
    for r in view["rules"]:
        assert set(r["verbs"]) == {"get", "list", "watch"}, f"view may only read: {r}"
        assert r["apiGroups"] == ["sluice.dev"], r
    for r in edit["rules"]:
        assert r["apiGroups"] == ["sluice.dev"], f"edit grants only Sluice's kinds: {r}"
    assert not any(b["roleRef"]["name"] in (f"{RELEASE}-edit", f"{RELEASE}-view") for b in of_kind(objects, "ClusterRoleBinding")), \
        "aggregated roles are picked up by label, never bound by the chart"
    off = {r["metadata"]["name"] for r in of_kind(render({"rbac": {"aggregateToDefaultRoles": False}}), "ClusterRole")}
    assert f"{RELEASE}-edit" not in off and f"{RELEASE}-view" not in off, off


@check("rbac: cluster-wide mode uses a ClusterRole, watchNamespaces one Role+RoleBinding per namespace")
def _() -> None:
    objects = render({})
    bindings = of_kind(objects, "ClusterRoleBinding")
    assert any(b["roleRef"]["name"] == RELEASE for b in bindings), bindings
    assert [r["metadata"]["namespace"] for r in of_kind(objects, "Role")] == [NAMESPACE], "only the leader-election Role"

    objects = render(VARIANTS["watchNamespaces"])
    cluster_roles = {r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")}
    bound = {b["roleRef"]["name"] for b in of_kind(objects, "ClusterRoleBinding")}
    assert bound == {f"{RELEASE}-crds"}, f"namespaced mode must not grant cluster-wide access: {bound}"
    assert cluster_roles == {f"{RELEASE}-crds", f"{RELEASE}-edit", f"{RELEASE}-view"}, cluster_roles
    role_ns = sorted(r["metadata"]["namespace"] for r in of_kind(objects, "Role") if r["metadata"]["name"] == RELEASE)
    assert role_ns == ["team-a", "team-b"], role_ns
    for rb in of_kind(objects, "RoleBinding"):
        subject = rb["subjects"][0]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE, rb


@check("rbac: leader election lease Role only when enabled")
def _() -> None:
    objects = render({"leaderElection": {"enabled": False}})
    assert not any("leader-election" in r["metadata"]["name"] for r in of_kind(objects, "Role")), "lease Role without leader election"
    env = {e["name"]: e.get("value") for e in of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SLUICE_LEADER_ELECTION"] == "false", env


@check("defaultBroker: a sluice.dev/v1alpha1 Broker with the requested spec")
def _() -> None:
    brokers = of_kind(render(VARIANTS["defaultBroker"]), "Broker")
    assert len(brokers) == 1, brokers
    b = brokers[0]
    assert b["apiVersion"] == "sluice.dev/v1alpha1", b["apiVersion"]
    assert b["metadata"]["name"] == "main" and b["metadata"]["namespace"] == NAMESPACE, b["metadata"]
    assert b["spec"]["replicas"] == 5, b["spec"]
    assert b["spec"]["version"] == "2.15.1", b["spec"]
    assert b["spec"]["storage"] == {"size": "20Gi", "storageClassName": "fast"}, b["spec"]
    assert "main-credentials" in notes(VARIANTS["defaultBroker"]), "NOTES should say where the credentials are"


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Fields of `value` that the OpenAPI `schema` does not declare (structural check)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            return [p for k, v in value.items() for p in _unknown_fields(v, extra, f"{path}.{k}")] if isinstance(extra, dict) else []
        out = []
        for k, v in value.items():
            if k not in props:
                out.append(f"{path}.{k}")
            else:
                out.extend(_unknown_fields(v, props[k], f"{path}.{k}"))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(value) for p in _unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


@check("defaultBroker: every rendered field exists in the Broker CRD schema")
def _() -> None:
    crd = yaml.safe_load((CHART / "crds" / "brokers.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    variant = {"defaultBroker": {"enabled": True, "replicas": 3, "storage": {"size": "5Gi", "class": "fast"},
                                 "resources": {"requests": {"cpu": "100m"}}}}
    broker = of_kind(render(variant), "Broker")[0]
    unknown = _unknown_fields(broker["spec"], schema["properties"]["spec"], "spec")
    assert not unknown, f"fields the Broker CRD does not know: {unknown}"


@check("serviceMonitor: scrapes the metrics Service's port at /metrics")
def _() -> None:
    objects = render(VARIANTS["serviceMonitor"])
    sm = of_kind(objects, "ServiceMonitor")
    assert len(sm) == 1, sm
    svc = of_kind(objects, "Service")[0]
    assert sm[0]["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "selector does not match the Service"
    assert sm[0]["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm[0]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm[0]["metadata"]["labels"]["release"] == "prom"
    assert sm[0]["spec"]["endpoints"][0]["honorLabels"] is True, "series carry the Sluice object's namespace"


# The labels and port the operator puts on worker pods (operator/src/desired/worker.rs).
WORKER_SOURCE = (ROOT / "operator" / "src" / "desired" / "worker.rs").read_text()


def _rust_const(name: str) -> str:
    import re

    m = re.search(rf'pub const {name}: &str = "([^"]+)";', WORKER_SOURCE)
    assert m, f"no {name} in operator/src/desired/worker.rs"
    return m.group(1)


@check("podMonitor: with the ServiceMonitor, scrapes the worker pods' metrics port by the group label")
def _() -> None:
    objects = render(VARIANTS["serviceMonitor"])
    pm = of_kind(objects, "PodMonitor")
    assert len(pm) == 1, pm
    spec = pm[0]["spec"]
    group_label = _rust_const("GROUP_LABEL")
    assert {"key": group_label, "operator": "Exists"} in spec["selector"]["matchExpressions"], spec["selector"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "sluice-operator"}, spec["selector"]
    assert spec["namespaceSelector"] == {"any": True}, spec["namespaceSelector"]
    endpoint = spec["podMetricsEndpoints"][0]
    assert endpoint["port"] == _rust_const("METRICS_PORT_NAME") and endpoint["path"] == "/metrics", endpoint
    assert pm[0]["metadata"]["labels"]["release"] == "prom"

    objects = render(VARIANTS["serviceMonitor"] | {"watchNamespaces": ["team-a", "team-b"]})
    spec = of_kind(objects, "PodMonitor")[0]["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}, spec["namespaceSelector"]

    off = {"serviceMonitor": {"enabled": True, "workers": {"enabled": False}}}
    assert not of_kind(render(off), "PodMonitor"), "workers.enabled=false still renders a PodMonitor"


@check("logFormat: json reaches the operator as SLUICE_LOG_FORMAT")
def _() -> None:
    c = of_kind(render(VARIANTS["jsonLogs"]), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SLUICE_LOG_FORMAT"] == "json", env


@check("grafanaDashboard: a ConfigMap with the sidecar label holding dashboards/sluice.json")
def _() -> None:
    import json

    cms = of_kind(render(VARIANTS["monitoring"]), "ConfigMap")
    assert len(cms) == 1, cms
    cm = cms[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Sluice", cm["metadata"]
    shipped = json.loads(cm["data"]["sluice.json"])
    assert shipped == json.loads((CHART / "dashboards" / "sluice.json").read_text()), "ConfigMap differs from the file"
    assert shipped["uid"] and shipped["title"] and shipped["panels"], "dashboard without uid, title or panels"
    ids = [p["id"] for p in shipped["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids not unique: {ids}"
    exprs = " ".join(t["expr"] for p in shipped["panels"] for t in p.get("targets", []))
    for metric in ("sluice_group_lag_messages", "sluice_worker_messages_processed_total", "sluice_dlq_depth_messages",
                   "sluice_group_scale_events_total", "sluice_worker_handler_duration_seconds_bucket"):
        assert metric in exprs, f"no panel queries {metric}"
    # That every metric named exists: operator/src/controller/metrics/catalog.rs (Rust, from the registries).


@check("prometheusRule: DLQ over threshold, lag growing, group failing, group and Broker not Ready")
def _() -> None:
    rules = of_kind(render(VARIANTS["monitoring"]), "PrometheusRule")
    assert len(rules) == 1, rules
    assert rules[0]["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rules[0]["spec"]["groups"] for r in g["rules"]}
    for name in ("SluiceDeadLetterQueueOverThreshold", "SluiceGroupLagGrowing", "SluiceGroupFailing",
                 "SluiceGroupNotReady", "SluiceBrokerNotReady"):
        assert name in alerts, f"no {name} in {sorted(alerts)}"
    for name, rule in alerts.items():
        assert "{{" not in rule["expr"], f"{name}: unrendered template in {rule['expr']!r}"
        assert rule["for"] and rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
    dlq = alerts["SluiceDeadLetterQueueOverThreshold"]["expr"]
    assert "sluice_dlq_alert_threshold_messages" in dlq and "> 7" in dlq, dlq
    assert alerts["SluiceGroupLagGrowing"]["for"] == "15m"


@check("networkPolicy: selects the operator, ingress only on 8080, egress DNS/API/NATS client+monitor")
def _() -> None:
    objects = render(VARIANTS["networkPolicy"])
    np = of_kind(objects, "NetworkPolicy")
    assert len(np) == 1, np
    spec = np[0]["spec"]
    dep = of_kind(objects, "Deployment")[0]
    assert spec["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert [p["port"] for r in spec["ingress"] for p in r["ports"]] == [8080], spec["ingress"]
    assert spec["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress_ports = sorted({p["port"] for r in spec["egress"] for p in r["ports"]})
    assert egress_ports == [53, 443, 4222, 6443, 8222], egress_ports


@check("networkPolicy: the operator builds Broker NetworkPolicies admitting its own pods (env), off without it")
def _() -> None:
    dep = of_kind(render(VARIANTS["networkPolicy"]), "Deployment")[0]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SLUICE_BROKER_NETWORK_POLICY"]["value"] == "true", env
    assert env["SLUICE_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    labels = dict(p.split("=", 1) for p in env["SLUICE_OPERATOR_POD_LABELS"]["value"].split(","))
    assert labels == dep["spec"]["selector"]["matchLabels"], (labels, dep["spec"]["selector"])
    for values in ({}, {"networkPolicy": {"enabled": True, "brokers": False}}):
        env = {e["name"] for e in of_kind(render(values), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "SLUICE_BROKER_NETWORK_POLICY" not in env, values


@check("crds: charts/sluice/crds/ equals crds/ when both exist")
def _() -> None:
    chart_crds, repo_crds = CHART / "crds", ROOT / "crds"
    if not (chart_crds.is_dir() and repo_crds.is_dir()):
        print(f"  note: crds/ ({repo_crds.is_dir()}) or charts/sluice/crds/ ({chart_crds.is_dir()}) missing; nothing to compare")
        return
    cmp = filecmp.dircmp(repo_crds, chart_crds)
    assert not cmp.left_only, f"in crds/ only: {cmp.left_only}"
    assert not cmp.right_only, f"in charts/sluice/crds/ only: {cmp.right_only}"
    _, mismatch, errors = filecmp.cmpfiles(repo_crds, chart_crds, cmp.common_files, shallow=False)
    assert not mismatch and not errors, f"differ: {mismatch + errors}; regenerate both from the Rust types"
    with helm.Chart.load(CHART) as chart:
        names = {yaml.safe_load(c["data"])["metadata"]["name"] for c in chart.crds}
    expected = {f"{p}.sluice.dev" for p in PLURALS}
    assert expected <= names, f"chart CRDs {names} lack {expected - names}"


def main() -> int:
    failed = [n for n, err in _results if err is not None]
    passed = len(_results) - len(failed)
    print(f"\n{passed} passed, {len(failed)} failed")
    for n in failed:
        print(f"  failed: {n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
