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

{{/* Standalone listens on every address, which the sidecar refuses without tokens. */}}
{{- define "task-sidecar.checkTokens" -}}
{{- if and (eq .Values.mode "standalone") (not .Values.secret.existingSecret) }}
{{- if not (or .Values.secret.hookTokens .Values.secret.viewerTokens .Values.secret.operatorTokens) }}
{{- fail "mode standalone listens on 0.0.0.0 and needs tokens: set secret.hookTokens (and viewerTokens, operatorTokens) or secret.existingSecret" }}
{{- end }}
{{- end }}
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
- name: TASK_SIDECAR_POLICIES
  value: "/etc/task-sidecar/policies.yaml"
- name: TASK_SIDECAR_DATA_DIR
  value: {{ .Values.dataDir.path | quote }}
- name: TASK_SIDECAR_LOG_LEVEL
  value: {{ $s.logLevel | quote }}
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
- name: TASK_SIDECAR_FAILURE_RETENTION
  value: {{ $s.failureRetention | quote }}
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
The sidecar container. Used by the standalone Deployment and, in sidecar mode, by a worker
chart: {{ include "task-sidecar.container" (dict "Values" .Values.taskSidecar "Release" .Release) }}
*/}}
{{- define "task-sidecar.container" -}}
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
  env:
    {{- include "task-sidecar.env" . | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ .Values.sidecar.portName }}
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ .Values.sidecar.portName }}
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ .Values.sidecar.portName }}
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

{{/* The volumes the container mounts: the policies ConfigMap and the writable data dir. */}}
{{- define "task-sidecar.volumes" -}}
- name: {{ .Values.sidecar.volumePrefix }}policies
  configMap:
    name: {{ include "task-sidecar.policiesConfigMap" . }}
    items:
      - key: policies.yaml
        path: policies.yaml
- name: {{ .Values.sidecar.volumePrefix }}data
  emptyDir:
    {{- with .Values.dataDir.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with .Values.dataDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}

{{/* Environment for the worker container next to the sidecar: where it answers. */}}
{{- define "task-sidecar.workerEnv" -}}
- name: TASK_SIDECAR_URL
  value: {{ printf "http://127.0.0.1:%d" (int .Values.settings.port) | quote }}
{{- end }}

{{/*
Pod annotations that roll the pods when the policies or the Secret's values change. A worker
chart cannot read this chart's files, so the hash covers the values that produce them.
*/}}
{{- define "task-sidecar.checksums" -}}
checksum/policies: {{ toJson .Values.policies | sha256sum }}
checksum/secret: {{ toJson (omit .Values.secret "create") | sha256sum }}
{{- end }}
