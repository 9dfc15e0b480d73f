{{/* Chart name, overridable. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release. */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The sluice.dev resources the operator reconciles (plural names). */}}
{{- define "sluice.crdPlurals" -}}
{{- list "brokers" "topics" "queues" "consumergroups" "deadletterqueues" | toJson }}
{{- end }}

{{/*
Rules for namespaced objects, shared by the ClusterRole (cluster-wide mode) and the Roles
(one per watched namespace). No wildcards: every group, resource and verb is spelled out.
*/}}
{{- define "sluice.namespacedRules" -}}
{{- $plurals := include "sluice.crdPlurals" . | fromJsonArray }}
# The five kinds: watched (list, watch), read (get), finalizer added and removed (patch).
- apiGroups: ["sluice.dev"]
  resources:
  {{- range $plurals }}
    - {{ . }}
  {{- end }}
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["sluice.dev"]
  resources:
  {{- range $plurals }}
    - {{ . }}/status
  {{- end }}
  verbs: ["patch"]
# Owner references with blockOwnerDeletion on the objects built for a resource.
- apiGroups: ["sluice.dev"]
  resources:
  {{- range $plurals }}
    - {{ . }}/finalizers
  {{- end }}
  verbs: ["update"]
# Objects the operator builds: server-side applied (get, then patch; an apply that creates
# the object also needs create), watched as owned objects (list, watch). Garbage collection
# deletes them with their owner; the one delete the operator makes is a group's worker
# Deployment when its spec.template is removed (guarded by the Deployment's uid).
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Secrets: only read by name (the Brokers' credentials and TLS Secrets), created once
# (credentials), patched (route keys, TLS certificates). No list or watch: the operator
# never sees Secrets it was not told the name of.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The per-Broker NetworkPolicy, server-side applied.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
# cert-manager Certificates of Brokers with tls.mode CertManager, server-side applied.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["create", "patch"]
# Worker pods: listed for the scale-down choice, patched with
# controller.kubernetes.io/pod-deletion-cost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Events (kube-runtime's recorder writes events.k8s.io/v1).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
