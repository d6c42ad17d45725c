{{/*
Helpers of the monitoring mixin's generated templates (_mixin-rules.tpl, _mixin-dashboards.tpl,
written by scripts/sync-chart-files.py from the skeletons of sidecar/mixin). Each does what
the filter of the same name does in sidecar/mixin/skeleton.py; tests/test_helm.py renders the
chart and the mixin with the same configs and compares.
*/}}

{{/* Seconds of a duration in s, m, h, d, w ("1h30m" -> 5400). */}}
{{- define "task-sidecar.mixin.seconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+[smhdw]" . -1 }}
{{- $number := regexFind "^[0-9]+" . }}
{{- $total = add $total (mul (atoi $number) (get $units (trimPrefix $number .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* The selectors as PromQL matchers: `, job=~"x"` after other matchers. */}}
{{- define "task-sidecar.mixin.matchers" -}}
{{- range $label, $regex := . }}
{{- if $regex }}, {{ $label }}=~"{{ $regex | replace "\\" "\\\\" | replace "\"" "\\\"" }}"{{ end }}
{{- end }}
{{- end }}

{{/* The selectors after a bare metric name: `{job=~"x", namespace=~"y"}`, or nothing. */}}
{{- define "task-sidecar.mixin.selector" -}}
{{- $found := include "task-sidecar.mixin.matchers" . | trimPrefix ", " }}
{{- if $found }}{{ printf "{%s}" $found }}{{ end }}
{{- end }}

{{/* Every SLO window of the page and ticket pairs, once each, shortest first (JSON list). */}}
{{- define "task-sidecar.mixin.sloWindows" -}}
{{- $byKey := dict }}
{{- range $pair := concat .slo.page .slo.ticket }}
{{- range $window := list $pair.long $pair.short }}
{{- $seconds := include "task-sidecar.mixin.seconds" $window | atoi }}
{{- $_ := set $byKey (printf "%012d %s" $seconds $window) $window }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $key := keys $byKey | sortAlpha }}
{{- $out = append $out (get $byKey $key) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* What values.schema.json cannot check about monitoring.mixin. */}}
{{- define "task-sidecar.mixin.check" -}}
{{- if not (lt (float64 .dlq.warning) (float64 .dlq.critical)) }}
{{- fail "monitoring.mixin.dlq: `warning` must be below `critical`" }}
{{- end }}
{{- end }}

{{/* The rules file (a mapping with `groups`) for the mixin config given. */}}
{{- define "task-sidecar.mixin.rulesFile" -}}
{{- include "task-sidecar.mixin.check" . }}
{{- $rules := include "task-sidecar.mixin.rules" . | fromYaml }}
{{- if hasKey $rules "Error" }}
{{- fail (printf "the mixin's rules did not render as YAML: %s" $rules.Error) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/* A string JSON-escaped, without its quotes: text inside a generated JSON string. */}}
{{- define "task-sidecar.mixin.json" -}}
{{- toJson . | trimPrefix "\"" | trimSuffix "\"" }}
{{- end }}
