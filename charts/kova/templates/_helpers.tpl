{{- define "kova.name" -}}kova{{- end -}}

{{- define "kova.fullname" -}}
{{- if contains "kova" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-kova" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kova.labels" -}}
app.kubernetes.io/name: kova
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kova.selector" -}}
app.kubernetes.io/name: kova
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kova.s3Secret" -}}
{{- default (printf "%s-s3" (include "kova.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}

{{- define "kova.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}{{ .Values.s3.endpoint }}
{{- else -}}{{ printf "%s-minio.%s.svc:9000" (include "kova.fullname" .) .Release.Namespace }}{{- end -}}
{{- end -}}

{{- define "kova.apiSelector" -}}
app.kubernetes.io/name: kova
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}
