{{/*
The monitor (`stage-guard monitor`, monitor.enabled): its own name, so neither the webhook's Service,
PodDisruptionBudget nor spread constraints select its pod.
*/}}
{{- define "stage-guard.monitor.fullname" -}}
{{- printf "%s-monitor" (include "stage-guard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stage-guard.monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-monitor" (include "stage-guard.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stage-guard.monitor.labels" -}}
{{ include "stage-guard.monitor.selectorLabels" . }}
app.kubernetes.io/component: monitor
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}
