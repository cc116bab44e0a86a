{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "pedi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pedi.fullname" -}}
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

{{/* "<fullname>-<component>", e.g. pedi-orchestrator-worker. Args: (list $ "worker"). */}}
{{- define "pedi.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "pedi.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pedi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pedi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pedi.secretName" -}}
{{- default (include "pedi.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* The Secret holding the API keys file (apiKeysFile), or "" when none is configured. */}}
{{- define "pedi.apiKeysSecretName" -}}
{{- if .Values.apiKeysFile.existingSecret }}
{{- .Values.apiKeysFile.existingSecret }}
{{- else if .Values.apiKeysFile.content }}
{{- include "pedi.componentName" (list . "api-keys") }}
{{- end }}
{{- end }}

{{/* Where the API pods see the keys file (API_KEYS_FILE). */}}
{{- define "pedi.apiKeysDir" -}}
/etc/pedi/api-keys
{{- end }}

{{/* Labels ------------------------------------------------------------------------------------ */}}

{{- define "pedi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pedi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pedi-orchestrator
{{- end }}

{{/* Selector labels of one component. Args: (list $ "api"). */}}
{{- define "pedi.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "pedi.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Images ------------------------------------------------------------------------------------ */}}

{{/* Args: (list $ .Values.images.api). */}}
{{- define "pedi.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* Settings ---------------------------------------------------------------------------------- */}}

{{/* The queue's Redis list: "rq:queue:" + orchestrator.constants.QUEUE_NAME (a test checks it). */}}
{{- define "pedi.queueList" -}}
rq:queue:pedi-screen
{{- end }}

{{/* URL of one model tier: config.modelUrls wins, else the bundled tier of that name, else "". */}}
{{- define "pedi.modelUrl" -}}
{{- $root := index . 0 }}
{{- $tier := index . 1 }}
{{- $url := index $root.Values.config.modelUrls $tier }}
{{- if and (not $url) $root.Values.modelservers.enabled }}
{{- range $root.Values.modelservers.tiers }}
{{- if and (not $url) (eq .tier $tier) }}
{{- $url = printf "http://%s:%v" (include "pedi.componentName" (list $root (printf "modelserver-%s" .name))) $root.Values.modelservers.port }}
{{- end }}
{{- end }}
{{- end }}
{{- $url }}
{{- end }}

{{/* env of the API and worker containers: the ConfigMap, then the named keys of the Secret.
     Args: (list $ (list "DATABASE_URL" "REDIS_URL")). Each process gets only the secrets it uses. */}}
{{- define "pedi.appEnv" -}}
{{- $root := index . 0 -}}
envFrom:
  - configMapRef:
      name: {{ include "pedi.fullname" $root }}
env:
  {{- range $key := index . 1 }}
  - name: {{ $key }}
    valueFrom:
      secretKeyRef:
        name: {{ include "pedi.secretName" $root }}
        key: {{ $key }}
  {{- end }}
{{- end }}

{{/* Pod-level settings every pod of the chart shares. */}}
{{- define "pedi.podCommon" -}}
serviceAccountName: {{ include "pedi.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
# Kubernetes service links would inject variables such as WORKER_PORT into every pod; the app
# refuses unknown variables under its own prefixes, so they must stay off.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Rollout triggers: a changed ConfigMap or inline secret value restarts the pods. */}}
{{- define "pedi.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ list .Values.secret .Values.apiKeysFile | toJson | sha256sum }}
{{- end }}

{{/* Writable scratch space on a read-only root filesystem. */}}
{{- define "pedi.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
