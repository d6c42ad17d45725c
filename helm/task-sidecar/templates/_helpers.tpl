{{/*
Names. The base name is the constant "task-sidecar" (not .Chart.Name), so the sidecar
templates below give the same names when a worker chart calls them with its own context.
*/}}
{{- define "task-sidecar.name" -}}
{{- default "task-sidecar" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "task-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "task-sidecar" .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "task-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "task-sidecar.labels" -}}
helm.sh/chart: {{ include "task-sidecar.chart" . }}
{{ include "task-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "task-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "task-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "task-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "task-sidecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "task-sidecar.secretName" -}}
{{- default (include "task-sidecar.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "task-sidecar.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "task-sidecar.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{- define "task-sidecar.image" -}}
{{- $tag := .Values.image.tag }}
{{- if and (not $tag) .Chart }}{{ $tag = .Chart.AppVersion }}{{ end }}
{{- if not (or $tag .Values.image.digest) }}
{{- fail "image.tag: set it (a worker chart calling the sidecar templates has no appVersion of this chart)" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The keys of the Secret and the variables they become. */}}
{{- define "task-sidecar.secretKeys" -}}
hookTokens: [hook-tokens, TASK_SIDECAR_HOOK_TOKENS]
viewerTokens: [viewer-tokens, TASK_SIDECAR_VIEWER_TOKENS]
operatorTokens: [operator-tokens, TASK_SIDECAR_OPERATOR_TOKENS]
postgresDsn: [postgres-dsn, TASK_SIDECAR_POSTGRES_DSN]
redisUrl: [redis-url, TASK_SIDECAR_REDIS_URL]
celeryBrokerUrl: [celery-broker-url, TASK_SIDECAR_CELERY_BROKER_URL]
webhookSecret: [webhook-secret, TASK_SIDECAR_WEBHOOK_SECRET]
{{- end }}

{{/* "postgres" or "embedded": where the DLQ lives (values: store, secret.postgresDsn). */}}
{{- define "task-sidecar.store" -}}
{{- if eq .Values.store "auto" }}
{{- ternary "postgres" "embedded" (not (empty .Values.secret.postgresDsn)) }}
{{- else }}
{{- .Values.store }}
{{- end }}
{{- end }}

{{/* Whether /metrics and the probes have their own port (always in sidecar mode). */}}
{{- define "task-sidecar.metricsPortOn" -}}
{{- if or (eq .Values.mode "sidecar") .Values.metrics.separateInStandalone }}true{{ end }}
{{- end }}

{{/* The port name the probes and Prometheus use. */}}
{{- define "task-sidecar.probePort" -}}
{{- ternary .Values.sidecar.metricsPortName .Values.sidecar.portName (eq (include "task-sidecar.metricsPortOn" .) "true") }}
{{- end }}

{{/*
Refuse what would lose dead letters. The embedded store is one SQLite file per pod: more
than one standalone pod would split the DLQ (and each would keep its own breakers); in
sidecar mode it lives in the worker pod's emptyDir and goes with the pod.
*/}}
{{- define "task-sidecar.checkStore" -}}
{{- $store := include "task-sidecar.store" . }}
{{- if and (eq .Values.store "postgres") (not .Values.secret.postgresDsn) (not .Values.secret.existingSecret) }}
{{- fail "store: postgres needs secret.postgresDsn (or secret.existingSecret with a postgres-dsn key)" }}
{{- end }}
{{- if eq $store "embedded" }}
{{- if eq .Values.mode "standalone" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount: %d needs PostgreSQL: the embedded store is one SQLite file per pod, so the DLQ would be split across pods. Set secret.postgresDsn (or store: postgres with secret.existingSecret), or replicaCount: 1" (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs PostgreSQL: the embedded store is one SQLite file per pod. Set secret.postgresDsn (or store: postgres with secret.existingSecret), or autoscaling.enabled: false" }}
{{- end }}
{{- if not .Values.persistence.enabled }}
{{- fail "persistence.enabled: false with the embedded store would lose the DLQ on every restart: set secret.postgresDsn, or keep persistence.enabled" }}
{{- end }}
{{- else if ne .Values.store "embedded" }}
{{- fail "mode: sidecar without PostgreSQL keeps each worker pod's DLQ in its emptyDir, lost with the pod: set secret.postgresDsn (or store: postgres with secret.existingSecret), or store: embedded to accept that" }}
{{- end }}
{{- end }}
{{- if and .Values.migration.enabled (ne $store "postgres") }}
{{- fail "migration.enabled needs PostgreSQL: set secret.postgresDsn (or store: postgres with secret.existingSecret)" }}
{{- end }}
{{- end }}

{{/*
The Secret's data (base64): the values given, and in standalone mode with no token given
at all, generated hook, viewer and operator tokens. `existing` is the data of the Secret as
it is in the cluster (lookup), so an upgrade keeps the tokens an install generated.
Call with (dict "ctx" $ "existing" $data).
*/}}
{{- define "task-sidecar.secretData" -}}
{{- $values := .ctx.Values }}
{{- $existing := .existing | default dict }}
{{- $data := dict }}
{{- range $key, $pair := include "task-sidecar.secretKeys" .ctx | fromYaml }}
{{- with index $values.secret $key }}
{{- $_ := set $data (index $pair 0) (b64enc .) }}
{{- end }}
{{- end }}
{{- $given := or $values.secret.hookTokens $values.secret.viewerTokens $values.secret.operatorTokens }}
{{- if and (eq $values.mode "standalone") (not $given) }}
{{- range $key, $name := dict "hook-tokens" "workers" "viewer-tokens" "viewer" "operator-tokens" "operator" }}
{{- $_ := set $data $key (index $existing $key | default (printf "%s:%s" $name (randAlphaNum 32) | b64enc)) }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
The container's environment: every setting as a TASK_SIDECAR_* variable.
*/}}
{{- define "task-sidecar.env" -}}
{{- $s := .Values.settings -}}
- name: TASK_SIDECAR_HOST
  value: {{ ternary "0.0.0.0" "127.0.0.1" (eq .Values.mode "standalone") | quote }}
- name: TASK_SIDECAR_PORT
  value: {{ $s.port | quote }}
{{- if eq (include "task-sidecar.metricsPortOn" .) "true" }}
- name: TASK_SIDECAR_METRICS_HOST
  value: "0.0.0.0"
- name: TASK_SIDECAR_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end }}
- name: TASK_SIDECAR_POLICIES
  value: "/etc/task-sidecar/policies.yaml"
- name: TASK_SIDECAR_DATA_DIR
  value: {{ .Values.dataDir.path | quote }}
- name: TASK_SIDECAR_LOG_LEVEL
  value: {{ $s.logLevel | quote }}
{{- if ne $s.logFormat "text" }}
- name: TASK_SIDECAR_LOG_FORMAT
  value: {{ $s.logFormat | quote }}
{{- end }}
{{- if $s.accessLog }}
- name: TASK_SIDECAR_ACCESS_LOG
  value: "true"
{{- end }}
- name: TASK_SIDECAR_BODY_LIMIT
  value: {{ $s.bodyLimit | int64 | quote }}
- name: TASK_SIDECAR_RELOAD_INTERVAL
  value: {{ $s.reloadInterval | quote }}
- name: TASK_SIDECAR_SHUTDOWN_GRACE
  value: {{ $s.shutdownGrace | quote }}
- name: TASK_SIDECAR_TASK_LABEL_LIMIT
  value: {{ $s.taskLabelLimit | int64 | quote }}
- name: TASK_SIDECAR_MIGRATE
  value: {{ ternary "1" "0" $s.migrate | quote }}
- name: TASK_SIDECAR_REQUEUE
  value: {{ $s.requeue | quote }}
{{- with $s.queues }}
- name: TASK_SIDECAR_QUEUES
  value: {{ join "," . | quote }}
{{- end }}
- name: TASK_SIDECAR_POLL_INTERVAL
  value: {{ $s.pollInterval | quote }}
- name: TASK_SIDECAR_EVENT_RETENTION
  value: {{ $s.eventRetention | quote }}
{{- with $s.webhookUrl }}
- name: TASK_SIDECAR_WEBHOOK_URL
  value: {{ . | quote }}
{{- end }}
{{- $secret := include "task-sidecar.secretName" . }}
{{- range $key, $pair := include "task-sidecar.secretKeys" . | fromYaml }}
- name: {{ index $pair 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ index $pair 0 }}
      optional: true
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The sidecar container. Used by the standalone workload and, in sidecar mode, by a worker
chart: {{ include "task-sidecar.container" (dict "Values" .Values.taskSidecar "Release" .Release) }}
*/}}
{{- define "task-sidecar.container" -}}
{{- include "task-sidecar.checkStore" . }}
{{- $probePort := include "task-sidecar.probePort" . }}
- name: {{ .Values.sidecar.containerName }}
  image: {{ include "task-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- with .Values.extraArgs }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: {{ .Values.sidecar.portName }}
      containerPort: {{ .Values.settings.port }}
      protocol: TCP
    {{- if eq (include "task-sidecar.metricsPortOn" .) "true" }}
    - name: {{ .Values.sidecar.metricsPortName }}
      containerPort: {{ .Values.metrics.port }}
      protocol: TCP
    {{- end }}
  env:
    {{- include "task-sidecar.env" . | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $probePort }}
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $probePort }}
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ $probePort }}
    {{- toYaml .Values.startupProbe | nindent 4 }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ .Values.sidecar.volumePrefix }}policies
      mountPath: /etc/task-sidecar
      readOnly: true
    - name: {{ .Values.sidecar.volumePrefix }}data
      mountPath: {{ .Values.dataDir.path }}
{{- end }}

{{/*
The volumes the container mounts: the policies ConfigMap and the writable data dir (an
emptyDir in sidecar mode or without persistence; the claim of the embedded standalone pod;
nothing for the PostgreSQL StatefulSet, whose volumeClaimTemplates make it).
*/}}
{{- define "task-sidecar.volumes" -}}
- name: {{ .Values.sidecar.volumePrefix }}policies
  configMap:
    name: {{ include "task-sidecar.policiesConfigMap" . }}
    items:
      - key: policies.yaml
        path: policies.yaml
{{- $standalone := eq .Values.mode "standalone" }}
{{- if and $standalone .Values.persistence.enabled }}
{{- if eq (include "task-sidecar.store" .) "embedded" }}
- name: {{ .Values.sidecar.volumePrefix }}data
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "task-sidecar.fullname" .)) }}
{{- end }}
{{- else }}
- name: {{ .Values.sidecar.volumePrefix }}data
  emptyDir:
    {{- with .Values.dataDir.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with .Values.dataDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
{{- if not $standalone }}
- name: {{ .Values.sidecar.volumePrefix }}outbox
  emptyDir:
    sizeLimit: {{ .Values.sidecar.workerOutbox.sizeLimit }}
{{- end }}
{{- end }}

{{/*
Environment for the worker container next to the sidecar: where it answers, and where its
client keeps the dead letters it decides while the sidecar is away (the volume that
task-sidecar.workerVolumeMounts mounts).
*/}}
{{- define "task-sidecar.workerEnv" -}}
- name: TASK_SIDECAR_URL
  value: {{ printf "http://127.0.0.1:%d" (int .Values.settings.port) | quote }}
- name: TASK_SIDECAR_CLIENT_OUTBOX
  value: {{ .Values.sidecar.workerOutbox.mountPath | quote }}
{{- end }}

{{/* The worker container's mount of its outbox (an emptyDir in task-sidecar.volumes). */}}
{{- define "task-sidecar.workerVolumeMounts" -}}
- name: {{ .Values.sidecar.volumePrefix }}outbox
  mountPath: {{ .Values.sidecar.workerOutbox.mountPath }}
{{- end }}

{{/*
Labels for the worker pods' template (sidecar mode): the PodMonitor selects pods by them.
*/}}
{{- define "task-sidecar.podLabels" -}}
task-sidecar/sidecar-of: {{ include "task-sidecar.fullname" . }}
{{- end }}

{{/*
Pod annotations that roll the pods when the policies or the Secret's values change. A worker
chart cannot read this chart's files, so the hash covers the values that produce them.
*/}}
{{- define "task-sidecar.checksums" -}}
checksum/policies: {{ toJson .Values.policies | sha256sum }}
checksum/secret: {{ toJson (omit .Values.secret "create") | sha256sum }}
{{- end }}
