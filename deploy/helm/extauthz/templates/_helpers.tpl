{{- define "extauthz.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "extauthz.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "extauthz.labels" -}}
{{ include "extauthz.selectorLabels" . }}
app.kubernetes.io/part-of: extauthz
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The ingress gateway's pods, as a NetworkPolicy peer. */ -}}
{{- define "extauthz.gatewayPeer" -}}
- namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: {{ .Values.networkPolicy.gateway.namespace }}}
  podSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.gateway.podLabels | nindent 6 }}
{{- end -}}
