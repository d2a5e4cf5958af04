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
    {{- include "kova.storesEnv" . | nindent 4 }}
  resources: {{- toYaml .Values.worker.resources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: worker, mountPath: /run/kova}
    - {name: tmp, mountPath: /tmp}
    {{- include "kova.storeMounts" . | nindent 4 }}
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
{{- include "kova.storeVolumes" . }}
{{- end -}}


{{- /* Glance's stores (values `stores`): KOVA_STORES as JSON, the keys of extra S3 stores, the key that signs a
file store's links; the file stores' claims mounted where KOVA_STORES says. */}}
{{- define "kova.hasFileStore" -}}
{{- range .Values.stores.extra }}{{ if eq .type "file" }}true{{ end }}{{ end -}}
{{- end -}}

{{- define "kova.storesJson" -}}
{{- $stores := list (dict "id" "s3" "type" "s3" "weight" (.Values.stores.primary.weight | default 0) "description" (.Values.stores.primary.description | default "") "default" (.Values.stores.primary.default | default false)) -}}
{{- $api := printf "http://%s-api.%s.svc:%v" (include "kova.fullname" .) .Release.Namespace .Values.api.service.port -}}
{{- range .Values.stores.extra -}}
{{- $s := dict "id" .id "type" .type "weight" (.weight | default 0) "description" (.description | default "") "default" (.default | default false) -}}
{{- if eq .type "file" -}}
{{- $_ := set $s "path" (printf "/var/lib/kova/stores/%s" .id) -}}
{{- $_ := set $s "url" (.url | default $api) -}}
{{- else -}}
{{- $_ := set $s "endpoint" .endpoint -}}
{{- $_ := set $s "bucket" (.bucket | default "kova-images") -}}
{{- $_ := set $s "secure" (.secure | default false) -}}
{{- $_ := set $s "region" (.region | default "") -}}
{{- end -}}
{{- $stores = append $stores $s -}}
{{- end -}}
{{- toJson $stores -}}
{{- end -}}

{{- define "kova.storesEnv" -}}
- {name: KOVA_STORES, value: {{ include "kova.storesJson" . | quote }}}
{{- range .Values.stores.extra }}
{{- if eq .type "s3" }}
- name: KOVA_STORE_{{ .id | upper | replace "-" "_" }}_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: accessKey}}
- name: KOVA_STORE_{{ .id | upper | replace "-" "_" }}_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: secretKey}}
{{- end }}
{{- end }}
{{- if include "kova.hasFileStore" . }}
- name: KOVA_STORE_LINK_KEY
  valueFrom: {secretKeyRef: {name: {{ include "kova.fullname" . }}-store-links, key: key}}
{{- end }}
{{- end -}}

{{- define "kova.storeMounts" -}}
{{- range .Values.stores.extra }}
{{- if eq .type "file" }}
- {name: store-{{ .id }}, mountPath: /var/lib/kova/stores/{{ .id }}}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kova.storeVolumes" -}}
{{- $full := include "kova.fullname" . -}}
{{- range .Values.stores.extra }}
{{- if eq .type "file" }}
- name: store-{{ .id }}
  persistentVolumeClaim: {claimName: {{ $full }}-store-{{ .id }}}
{{- end }}
{{- end }}
{{- end -}}
