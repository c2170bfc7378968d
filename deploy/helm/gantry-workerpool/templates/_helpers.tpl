{{- define "gantry-workerpool.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gantry-workerpool.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gantry-workerpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gantry-workerpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gantry-workerpool.labels" -}}
{{ include "gantry-workerpool.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gantry-workerpool.secretName" -}}
{{- .Values.credentials.existingSecret | default (include "gantry-workerpool.fullname" .) -}}
{{- end -}}

{{/* Proxy variables, upper and lower case: tools disagree on which they read. */}}
{{- define "gantry-workerpool.proxyEnv" -}}
{{- $proxy := .Values.proxy -}}
{{- range $name, $value := dict "HTTP_PROXY" $proxy.http "HTTPS_PROXY" $proxy.https "NO_PROXY" $proxy.noProxy }}
{{- if $value }}
- name: {{ $name }}
  value: {{ $value | quote }}
- name: {{ lower $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}
