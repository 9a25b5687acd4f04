{{- /* Combinations that cannot work fail the render with a message naming the keys. */ -}}
{{- define "orchard.validate" -}}
{{- if and .Values.s3.endpoint (not .Values.quickstart.minio.enabled) (not .Values.s3.existingSecret) (not (and .Values.s3.accessKeyId .Values.s3.secretAccessKey)) -}}
{{- fail "s3.endpoint needs s3.accessKeyId and s3.secretAccessKey, or s3.existingSecret" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (include "orchard.clusterMode" .)) -}}
{{- fail "autoscaling.enabled needs cluster mode (database.url, database.existingSecret or quickstart.postgres.enabled): embedded mode runs one pod" -}}
{{- end -}}
{{- if and .Values.database.url .Values.database.existingSecret -}}
{{- fail "set database.url or database.existingSecret, not both" -}}
{{- end -}}
{{- if and (include "orchard.clusterMode" .) (not (or .Values.s3.endpoint .Values.quickstart.minio.enabled)) -}}
{{- fail "cluster mode (a shared database) needs shared artifact storage: set s3.endpoint (or quickstart.minio.enabled)" -}}
{{- end -}}
{{- end -}}
