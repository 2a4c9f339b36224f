{{/* Names, labels and images shared by every template. */}}

{{- define "tabby.fullname" -}}
{{- if contains "tabby" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tabby" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tabby.agent.name" -}}{{ include "tabby.fullname" . }}-agent{{- end -}}
{{- define "tabby.controller.name" -}}{{ include "tabby.fullname" . }}-ipam-controller{{- end -}}

{{- define "tabby.labels" -}}
app.kubernetes.io/name: tabby
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "agent") */}}
{{- define "tabby.selectorLabels" -}}
app.kubernetes.io/name: tabby
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference: (dict "ctx" $ "image" .Values.agent.image) */}}
{{- define "tabby.image" -}}
{{- $registry := default .ctx.Values.image.registry .image.registry -}}
{{- $tag := default .ctx.Chart.AppVersion (default .ctx.Values.image.tag .image.tag) -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .image.digest -}}
{{ $repo }}@{{ .image.digest }}
{{- else -}}
{{ $repo }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT overrides (both components run on the host network). */}}
{{- define "tabby.apiServerEnv" -}}
{{- if .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ default "443" .Values.apiServer.port | toString | quote }}
{{- end }}
{{- end -}}

{{/* A label selector from values; an empty or missing one selects everything ({}). */}}
{{- define "tabby.selector" -}}
{{- if . }}{{ toYaml . }}{{ else }}{}{{ end -}}
{{- end -}}
