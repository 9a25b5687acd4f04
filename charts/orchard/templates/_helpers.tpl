{{/* Names */}}
{{- define "orchard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orchard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orchard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "orchard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "orchard.selector" (list . "server") */}}
{{- define "orchard.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "orchard.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "orchard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* "true" when the replicas share a database (cluster mode), else "" (embedded mode). */}}
{{- define "orchard.clusterMode" -}}
{{- if or .Values.database.url .Values.database.existingSecret .Values.quickstart.postgres.enabled -}}true{{- end -}}
{{- end -}}

{{- define "orchard.operatorEnabled" -}}
{{- if and (include "orchard.clusterMode" .) .Values.operator.enabled -}}true{{- end -}}
{{- end -}}

{{- define "orchard.secretName" -}}
{{- include "orchard.fullname" . -}}
{{- end -}}

{{/* Redis Cluster nodes: the configured list, or the quick-start StatefulSet's pods. */}}
{{- define "orchard.redisNodes" -}}
{{- if .Values.quickstart.redis.enabled -}}
{{- $f := include "orchard.fullname" . -}}
{{- $nodes := list -}}
{{- range $i := until 6 -}}
{{- $nodes = append $nodes (printf "%s-redis-%d.%s-redis:6379" $f $i $f) -}}
{{- end -}}
{{- join "," $nodes -}}
{{- else -}}
{{- join "," .Values.redis.clusterNodes -}}
{{- end -}}
{{- end -}}

{{/* A generated value kept across upgrades: the value in the release's existing Secret, or "" when there is none yet. */}}
{{- define "orchard.kept" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (include "orchard.secretName" $root) -}}
{{- if and $existing (hasKey ($existing.data | default dict) $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the server and the operator: database, cache, storage, credentials key. */}}
{{- define "orchard.backendEnv" -}}
{{- $secret := include "orchard.secretName" . -}}
{{- if include "orchard.clusterMode" . }}
- name: ORCHARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | default $secret }}
      key: {{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
- name: ORCHARD_DATABASE_POOL_SIZE
  value: {{ .Values.database.poolSize | quote }}
{{- end }}
{{- $nodes := include "orchard.redisNodes" . }}
{{- if $nodes }}
- name: ORCHARD_REDIS_CLUSTER_NODES
  value: {{ $nodes | quote }}
{{- end }}
{{- if or .Values.redis.password .Values.redis.existingSecret }}
- name: ORCHARD_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret | default $secret }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}
- name: ORCHARD_CACHE_NAMESPACE
  value: {{ .Values.redis.namespace | quote }}
{{- if or .Values.s3.endpoint .Values.quickstart.minio.enabled }}
- name: ORCHARD_S3_ENDPOINT
  value: {{ if .Values.quickstart.minio.enabled }}{{ printf "http://%s-minio:9000" (include "orchard.fullname" .) | quote }}{{ else }}{{ .Values.s3.endpoint | quote }}{{ end }}
- name: ORCHARD_S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: ORCHARD_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.prefix }}
- name: ORCHARD_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: ORCHARD_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | default $secret }}
      key: {{ if .Values.s3.existingSecret }}{{ .Values.s3.accessKeyIdKey }}{{ else }}s3-access-key-id{{ end }}
- name: ORCHARD_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | default $secret }}
      key: {{ if .Values.s3.existingSecret }}{{ .Values.s3.secretAccessKeyKey }}{{ else }}s3-secret-access-key{{ end }}
{{- end }}
- name: ORCHARD_CREDENTIALS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.credentialsKey.existingSecret | default $secret }}
      key: {{ if .Values.credentialsKey.existingSecret }}{{ .Values.credentialsKey.existingSecretKey }}{{ else }}credentials-key{{ end }}
{{- end -}}

{{- define "orchard.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The URL in-cluster clients reach the Service at (publicUrl when set): tarball links in npm packuments. */}}
{{- define "orchard.publicUrl" -}}
{{- if .Values.server.publicUrl -}}
{{- .Values.server.publicUrl -}}
{{- else -}}
{{- $host := printf "%s.%s.svc" (include "orchard.fullname" .) .Release.Namespace -}}
{{- ternary (printf "http://%s" $host) (printf "http://%s:%d" $host (int .Values.service.port)) (eq (int .Values.service.port) 80) -}}
{{- end -}}
{{- end -}}
