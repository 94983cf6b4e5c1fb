{{/* Names */}}

{{- define "imagesearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imagesearch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service (client-side load balancing); "-headless" needs 9 of the 63 characters. */}}
{{- define "imagesearch.headlessName" -}}
{{- printf "%s-headless" (include "imagesearch.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "imagesearch.headlessFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "imagesearch.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "imagesearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagesearch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels */}}

{{- define "imagesearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagesearch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imagesearch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "imagesearch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: imagesearch
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Image and device */}}

{{- define "imagesearch.image" -}}
{{- $variant := ternary "cuda" "cpu" .Values.gpu.enabled }}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion $variant) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "imagesearch.device" -}}
{{- .Values.server.device | default (ternary "cuda" "cpu" .Values.gpu.enabled) }}
{{- end }}

{{- define "imagesearch.modelsFromS3" -}}
{{- if hasPrefix "s3://" .Values.models.location }}true{{ end }}
{{- end }}

{{/*
Graceful termination: the pod sleeps in preStop, then the server drains; the kubelet's grace
period covers both plus a margin (it counts from the start of preStop).
*/}}
{{- define "imagesearch.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdown.preStopSleepSeconds .Values.shutdown.drainTimeoutSeconds .Values.shutdown.marginSeconds }}
{{- end }}

{{/*
Secret references, "name:key", or "" when that value is not configured. A value comes from its
existing Secret when one is named, else from the chart's Secret when set inline.
*/}}
{{- define "imagesearch.secretRef" -}}
{{- if .existing }}
{{- if .existingKey }}{{ printf "%s:%s" .existing .existingKey }}{{ end }}
{{- else if .value }}
{{- printf "%s:%s" (include "imagesearch.fullname" .root) .key }}
{{- end }}
{{- end }}

{{- define "imagesearch.databaseUrlRef" -}}
{{- $d := .Values.database }}
{{- include "imagesearch.secretRef" (dict "root" . "existing" $d.existingSecret "existingKey" $d.existingSecretKey "value" $d.url "key" "database-url") }}
{{- end }}

{{- define "imagesearch.adminTokenRef" -}}
{{- $a := .Values.auth }}
{{- include "imagesearch.secretRef" (dict "root" . "existing" $a.existingSecret "existingKey" $a.adminTokenKey "value" $a.adminToken "key" "admin-token") }}
{{- end }}

{{- define "imagesearch.writerTokenRef" -}}
{{- $a := .Values.auth }}
{{- include "imagesearch.secretRef" (dict "root" . "existing" $a.existingSecret "existingKey" $a.writerTokenKey "value" $a.writerToken "key" "writer-token") }}
{{- end }}

{{- define "imagesearch.s3AccessKeyIdRef" -}}
{{- $s := .Values.models.s3 }}
{{- include "imagesearch.secretRef" (dict "root" . "existing" $s.existingSecret "existingKey" $s.accessKeyIdKey "value" $s.accessKeyId "key" "aws-access-key-id") }}
{{- end }}

{{- define "imagesearch.s3SecretAccessKeyRef" -}}
{{- $s := .Values.models.s3 }}
{{- include "imagesearch.secretRef" (dict "root" . "existing" $s.existingSecret "existingKey" $s.secretAccessKeyKey "value" $s.secretAccessKey "key" "aws-secret-access-key") }}
{{- end }}

{{/* An env entry from a "name:key" reference. Call with (list "ENV_NAME" ref). */}}
{{- define "imagesearch.envFromSecret" -}}
{{- $ref := splitList ":" (index . 1) -}}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ index $ref 0 }}
      key: {{ index $ref 1 }}
{{- end }}

{{/* Whether the chart creates its own Secret (some value is set inline and used). */}}
{{- define "imagesearch.createSecret" -}}
{{- $v := .Values }}
{{- $db := and (eq $v.store "postgres") (not $v.database.existingSecret) $v.database.url }}
{{- $tokens := and (not $v.auth.existingSecret) (or $v.auth.adminToken $v.auth.writerToken) }}
{{- $s3 := and (include "imagesearch.modelsFromS3" .) (not $v.models.s3.existingSecret) (or $v.models.s3.accessKeyId $v.models.s3.secretAccessKey) }}
{{- if or $db $tokens $s3 }}true{{ end }}
{{- end }}

{{/* Refuses combinations that cannot work, before anything is applied. */}}
{{- define "imagesearch.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.store (list "local" "postgres")) }}
{{- fail (printf "store must be local or postgres, not %q" $v.store) }}
{{- end }}
{{- if not (has $v.searchIndex (list "memory" "postgres-exact" "postgres-hnsw")) }}
{{- fail (printf "searchIndex must be memory, postgres-exact or postgres-hnsw, not %q" $v.searchIndex) }}
{{- end }}
{{- if and (hasPrefix "postgres-" $v.searchIndex) (ne $v.store "postgres") }}
{{- fail (printf "searchIndex %s needs store: postgres" $v.searchIndex) }}
{{- end }}
{{- if eq $v.store "local" }}
{{- if gt (int $v.replicaCount) 1 }}
{{- fail (printf "store: local keeps the gallery on one volume and runs exactly one replica (replicaCount is %d); use store: postgres for more" (int $v.replicaCount)) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail "store: local runs exactly one replica: autoscaling.enabled needs store: postgres" }}
{{- end }}
{{- end }}
{{- if and (eq $v.store "postgres") (not (include "imagesearch.databaseUrlRef" .)) }}
{{- fail "store: postgres needs database.url or database.existingSecret (with database.existingSecretKey)" }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- if not (has $v.probes.mode (list "grpc" "exec")) }}
{{- fail (printf "probes.mode must be grpc or exec, not %q" $v.probes.mode) }}
{{- end }}
{{- if and $v.tls.enabled (eq $v.probes.mode "grpc") }}
{{- fail "tls.enabled: Kubernetes' native gRPC probes cannot speak TLS; set probes.mode: exec" }}
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (eq $v.store "postgres") (not (or $v.podDisruptionBudget.maxUnavailable $v.podDisruptionBudget.minAvailable)) }}
{{- fail "podDisruptionBudget needs maxUnavailable or minAvailable" }}
{{- end }}
{{- if and $v.podDisruptionBudget.maxUnavailable $v.podDisruptionBudget.minAvailable }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both" }}
{{- end }}
{{- end }}

{{/* The CLI's TLS flags inside a pod (NOTES). */}}
{{- define "imagesearch.cliTLSFlags" -}}
{{- if .Values.tls.enabled }}
{{- printf " --tls-ca /etc/imagesearch/tls/ca.crt --tls-domain %s" (.Values.probes.exec.tlsDomain | default (include "imagesearch.headlessFQDN" .)) }}
{{- if .Values.tls.clientCA }} --tls-cert /etc/imagesearch/tls/tls.crt --tls-key /etc/imagesearch/tls/tls.key{{ end }}
{{- end }}
{{- end }}

{{/*
The health probe handler. Call with (dict "root" $ "service" "" "probe" .Values.probes.readiness).
*/}}
{{- define "imagesearch.probeHandler" -}}
{{- $root := .root }}
{{- if eq $root.Values.probes.mode "grpc" }}
grpc:
  port: {{ $root.Values.ports.grpc }}
  service: {{ .service | quote }}
{{- else }}
{{- $scheme := ternary "https" "http" $root.Values.tls.enabled }}
exec:
  command:
    - /opt/imagesearch/bin/imagesearch
    - --endpoint
    - {{ printf "%s://127.0.0.1:%d" $scheme (int $root.Values.ports.grpc) }}
    - --timeout-s
    - {{ max 1 (sub (int .probe.timeoutSeconds) 1) | quote }}
    {{- if $root.Values.tls.enabled }}
    - --tls-ca
    - /etc/imagesearch/tls/ca.crt
    - --tls-domain
    - {{ $root.Values.probes.exec.tlsDomain | default (include "imagesearch.headlessFQDN" $root) }}
    {{- if $root.Values.tls.clientCA }}
    {{- /* Mutual TLS: the probe presents the pod's own certificate (needs the clientAuth usage). */}}
    - --tls-cert
    - /etc/imagesearch/tls/tls.crt
    - --tls-key
    - /etc/imagesearch/tls/tls.key
    {{- end }}
    {{- end }}
    {{- range $root.Values.probes.exec.extraArgs }}
    - {{ . | quote }}
    {{- end }}
    - health
    {{- if .service }}
    - --service
    - {{ .service }}
    {{- end }}
{{- end }}
{{- with .probe }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- if .successThreshold }}
successThreshold: {{ .successThreshold }}
{{- end }}
{{- end }}
{{- end }}
