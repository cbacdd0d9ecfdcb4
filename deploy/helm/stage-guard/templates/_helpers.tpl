{{/*
Names. The release "stage-guard" gives objects named "stage-guard", as deploy/base does.
*/}}
{{- define "stage-guard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stage-guard.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "stage-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stage-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stage-guard.labels" -}}
{{ include "stage-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "stage-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stage-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stage-guard.image" -}}
{{- $repository := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Certificates: the Secret the pods mount, and the CA bundle of the webhook configurations.
*/}}
{{- define "stage-guard.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret.name is required when certificates.mode is existingSecret" .Values.certificates.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "stage-guard.fullname" .) }}
{{- end }}
{{- end }}

{{/* The serving Certificate's namespace/name, for cert-manager's CA injector. */}}
{{- define "stage-guard.injectCaFrom" -}}
{{- printf "%s/%s-tls" .Release.Namespace (include "stage-guard.fullname" .) }}
{{- end }}

{{/* A base64 PEM CA bundle, checked: `what` names the value in the error. */}}
{{- define "stage-guard.checkedCaBundle" -}}
{{- $bundle := .bundle | trim }}
{{- if not $bundle }}
{{- fail (printf "%s is required: the base64 PEM CA bundle that verifies the serving certificate (the line `stage-guard certs` prints)" .what) }}
{{- end }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec $bundle)) }}
{{- fail (printf "%s is not a base64-encoded PEM certificate" .what) }}
{{- end }}
{{- $bundle }}
{{- end }}

{{/*
The CA bundle the webhook configurations carry, or nothing when cert-manager injects it.
*/}}
{{- define "stage-guard.caBundle" -}}
{{- if .Values.webhooks.url }}
{{- if .Values.webhooks.caBundle }}
{{- include "stage-guard.checkedCaBundle" (dict "bundle" .Values.webhooks.caBundle "what" "webhooks.caBundle") }}
{{- end }}
{{- else if eq .Values.certificates.mode "static" }}
{{- include "stage-guard.checkedCaBundle" (dict "bundle" .Values.certificates.static.caBundle "what" "certificates.static.caBundle") }}
{{- else if eq .Values.certificates.mode "existingSecret" }}
{{- include "stage-guard.checkedCaBundle" (dict "bundle" .Values.certificates.existingSecret.caBundle "what" "certificates.existingSecret.caBundle") }}
{{- end }}
{{- end }}

{{/*
Which requests reach the webhooks, from the stage configuration's three keys.

objectSelector: only objects that carry the stage label, before or after the write (the API server
sends an UPDATE when either side matches, so adding or removing the label is still judged).
matchConditions: every CREATE, and only the UPDATEs that change the label or one of the two
annotations; the Argo controller's status writes never leave the API server. `oldObject` is null on
CREATE and labels/annotations may be absent on either side, so presence is checked before a value is
read. The keys are quoted CEL strings; the schema allows only label-key characters in them.
*/}}
{{- define "stage-guard.objectSelector" -}}
matchExpressions:
  - key: {{ required "config.label is required" .Values.config.label | quote }}
    operator: Exists
{{- end }}

{{- define "stage-guard.matchConditions" -}}
{{- $label := required "config.label is required" .Values.config.label }}
{{- $history := required "config.history.annotation is required" .Values.config.history.annotation }}
{{- $override := required "config.override.annotation is required" .Values.config.override.annotation }}
- name: stage-or-stage-guard-annotations-changed
  expression: |-
    request.operation != 'UPDATE' ||
    {{- include "stage-guard.changedCondition" (dict "map" "labels" "key" $label) }} ||
    {{- include "stage-guard.changedCondition" (dict "map" "annotations" "key" $history) }} ||
    {{- include "stage-guard.changedCondition" (dict "map" "annotations" "key" $override) }}
{{- end }}

{{/* Presence differs, or present on both sides with different values. */}}
{{- define "stage-guard.changedCondition" }}
    (has(object.metadata.{{ .map }}) && '{{ .key }}' in object.metadata.{{ .map }}) !=
      (has(oldObject.metadata.{{ .map }}) && '{{ .key }}' in oldObject.metadata.{{ .map }}) ||
    (has(object.metadata.{{ .map }}) && '{{ .key }}' in object.metadata.{{ .map }} &&
      object.metadata.{{ .map }}['{{ .key }}'] != oldObject.metadata.{{ .map }}['{{ .key }}'])
{{- end }}

{{/* One webhook's clientConfig: the Service, or the development URL. */}}
{{- define "stage-guard.clientConfig" -}}
{{- $root := .root }}
{{- if $root.Values.webhooks.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhooks.url) .path | quote }}
{{- else }}
service:
  name: {{ include "stage-guard.fullname" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- with include "stage-guard.caBundle" $root }}
caBundle: {{ . }}
{{- end }}
{{- end }}

{{/* The fields both webhooks share. */}}
{{- define "stage-guard.webhookCommon" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
timeoutSeconds: {{ .Values.webhooks.timeoutSeconds }}
failurePolicy: {{ .Values.webhooks.failurePolicy }}
matchPolicy: Equivalent
rules:
  - apiGroups: ["argoproj.io"]
    apiVersions: ["v1alpha1"]
    resources: ["workflows"]
    operations: ["CREATE", "UPDATE"]
    scope: Namespaced
namespaceSelector:
  {{- with .Values.webhooks.namespaceSelector.matchLabels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  matchExpressions:
    # The webhook never judges its own namespace or kube-system.
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: [{{ .Release.Namespace | quote }}, "kube-system"]
    {{- with .Values.webhooks.namespaceSelector.matchExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
objectSelector:
  {{- include "stage-guard.objectSelector" . | trim | nindent 2 }}
matchConditions:
  {{- include "stage-guard.matchConditions" . | trim | nindent 2 }}
{{- end }}

{{/* The cert-manager annotation of the webhook configurations, when cert-manager injects the CA. */}}
{{- define "stage-guard.webhookAnnotations" -}}
{{- if and (eq .Values.certificates.mode "cert-manager") (not .Values.webhooks.url) }}
annotations:
  cert-manager.io/inject-ca-from: {{ include "stage-guard.injectCaFrom" . }}
{{- end }}
{{- end }}

{{/* Values the schema cannot check on its own: fails with a message that names the value. */}}
{{- define "stage-guard.validate" -}}
{{- $mode := .Values.certificates.mode }}
{{- if not (has $mode (list "cert-manager" "static" "existingSecret")) }}
{{- fail (printf "certificates.mode must be cert-manager, static or existingSecret, not %q" $mode) }}
{{- end }}
{{- if eq $mode "static" }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" .Values.certificates.static.tlsCrt) }}
{{- fail "certificates.static.tlsCrt must hold the PEM serving certificate (for example --set-file certificates.static.tlsCrt=certs/tls.crt)" }}
{{- end }}
{{- if not (regexMatch "-----BEGIN [A-Z ]*PRIVATE KEY-----" .Values.certificates.static.tlsKey) }}
{{- fail "certificates.static.tlsKey must hold the PEM private key (for example --set-file certificates.static.tlsKey=certs/tls.key)" }}
{{- end }}
{{- $_ := include "stage-guard.checkedCaBundle" (dict "bundle" .Values.certificates.static.caBundle "what" "certificates.static.caBundle") }}
{{- end }}
{{- if eq $mode "existingSecret" }}
{{- $_ := include "stage-guard.tlsSecretName" . }}
{{- $_ = include "stage-guard.checkedCaBundle" (dict "bundle" .Values.certificates.existingSecret.caBundle "what" "certificates.existingSecret.caBundle") }}
{{- end }}
{{- end }}

{{/*
The monitor's job label, which its ServiceMonitor sets and its alerts select, and the name of its
ServiceMonitor and PrometheusRule: "<fullname>-monitor" ("stage-guard-monitor" for the release
"stage-guard", as in deploy/monitoring/monitor/).
*/}}
{{/*
"true" when the monitor's /metrics is scraped: asked for with serviceMonitor.monitor.enabled, or the
chart's own monitor (monitor.enabled) while the webhook is scraped (serviceMonitor.enabled).
*/}}
{{- define "stage-guard.monitorScraped" -}}
{{- if or .Values.serviceMonitor.monitor.enabled (and .Values.monitor.enabled .Values.serviceMonitor.enabled) -}}
true
{{- end -}}
{{- end }}

{{- define "stage-guard.monitorJob" -}}
{{- printf "%s-monitor" (include "stage-guard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
