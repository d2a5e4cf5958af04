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

{{- /*
The import worker: a container of the same image that reads and checks tenant bytes (web-download, uploads,
snapshots). It gets the store's credentials and the import filter, no Kubernetes token (the pod mounts none by
itself; only the main container gets one, kova.apiAccess), and limits of its own.
*/}}
{{- define "kova.worker" -}}
- name: worker
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [worker, --socket=/run/kova/worker.sock]
  env:
    - {name: KOVA_S3_ENDPOINT, value: {{ include "kova.s3Endpoint" . | quote }}}
    - {name: KOVA_S3_BUCKET, value: {{ .Values.s3.bucket | quote }}}
    - {name: KOVA_S3_SECURE, value: {{ .Values.s3.secure | quote }}}
    - {name: KOVA_S3_REGION, value: {{ .Values.s3.region | quote }}}
    - name: KOVA_S3_ACCESS_KEY
      valueFrom: {secretKeyRef: {name: {{ include "kova.s3Secret" . }}, key: accessKey}}
    - name: KOVA_S3_SECRET_KEY
      valueFrom: {secretKeyRef: {name: {{ include "kova.s3Secret" . }}, key: secretKey}}
    - {name: KOVA_IMPORT_ALLOWED_SCHEMES, value: {{ join "," .Values.importFilter.allowedSchemes | quote }}}
    - {name: KOVA_IMPORT_ALLOWED_PORTS, value: {{ join "," .Values.importFilter.allowedPorts | quote }}}
    - {name: KOVA_IMPORT_ALLOWED_HOSTS, value: {{ join "," .Values.importFilter.allowedHosts | quote }}}
    - {name: KOVA_IMPORT_DENIED_HOSTS, value: {{ join "," .Values.importFilter.deniedHosts | quote }}}
  resources: {{- toYaml .Values.worker.resources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: worker, mountPath: /run/kova}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- /* What the kubelet would mount into every container, mounted into the main one only. */}}
{{- define "kova.apiAccess" -}}
- name: kube-api-access
  projected:
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
- name: worker  # the worker's socket
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end -}}
