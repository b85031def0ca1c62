{{/*
Naming, labels and shared fragments. Every pod template includes the same hardened
security contexts, so the chart has one place that decides them.
*/}}

{{- define "ragkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragkeeper.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "ragkeeper.componentName" -}}
{{- printf "%s-%s" (include "ragkeeper.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragkeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ragkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragkeeper
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "agent"). */}}
{{- define "ragkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragkeeper.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ragkeeper.componentLabels" -}}
{{ include "ragkeeper.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full image reference; call with (dict "root" $ "name" "ragkeeper-agent"). */}}
{{- define "ragkeeper.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repositoryPrefix .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* Name of the Secret holding the DSNs: the migrator's (database.secretKey), the agent's, the ingestion's. */}}
{{- define "ragkeeper.databaseSecretName" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- include "ragkeeper.componentName" (dict "root" . "component" "database") -}}
{{- end -}}
{{- end -}}

{{- define "ragkeeper.bundledDatabase" -}}
{{- if and .Values.database.bundled.enabled (not .Values.database.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* Pod-level security context: non-root numeric user, RuntimeDefault seccomp. */}}
{{- define "ragkeeper.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
fsGroup: {{ .Values.security.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context shared by every container. */}}
{{- define "ragkeeper.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The agent's database + embedding settings: DATABASE_URL is the agent role's DSN. */}}
{{- define "ragkeeper.knowledgeEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ragkeeper.databaseSecretName" . }}
      key: {{ .Values.database.agentSecretKey }}
{{- include "ragkeeper.embeddingEnv" . }}
{{- end -}}

{{- define "ragkeeper.embeddingEnv" -}}
{{- include "ragkeeper.embeddingConfigEnv" . }}
{{- if .Values.embedding.existingSecret }}
- name: EMBEDDING_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.embedding.existingSecret }}
      key: {{ .Values.embedding.apiKeyKey }}
{{- end }}
{{- end -}}

{{/* The embedding model settings without the API key (the operator passes a Secret reference). */}}
{{- define "ragkeeper.embeddingConfigEnv" -}}
{{- $cfg := include "ragkeeper.componentName" (dict "root" . "component" "config") }}
- name: EMBEDDING_PROVIDER
  valueFrom:
    configMapKeyRef:
      name: {{ $cfg }}
      key: EMBEDDING_PROVIDER
- name: EMBEDDING_BASE_URL
  valueFrom:
    configMapKeyRef:
      name: {{ $cfg }}
      key: EMBEDDING_BASE_URL
- name: EMBEDDING_MODEL_CHOICE
  valueFrom:
    configMapKeyRef:
      name: {{ $cfg }}
      key: EMBEDDING_MODEL_CHOICE
{{- end -}}

{{/* A writable /tmp: the only writable path of every image. */}}
{{- define "ragkeeper.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "ragkeeper.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Namespaces the operator manages; the release namespace when it watches all of them. */}}
{{- define "ragkeeper.jobNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join "," .Values.operator.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Fail unless a URL the browser will call is https, without credentials, query or fragment:
(list "<values key>" "<what it is>" <value>).
*/}}
{{- define "ragkeeper.requireHttpsUrl" -}}
{{- $key := index . 0 -}}{{- $what := index . 1 -}}{{- $url := index . 2 -}}
{{- if not (regexMatch "^https://[^/?#@[:space:]]+(/[^?#[:space:]]*)?$" $url) }}
{{- fail (printf "%s must be an https:// %s, got %q" $key $what $url) }}
{{- end }}
{{- end -}}

{{/*
The agent's web page settings (WEB_*). Title, the Supabase pair and the OIDC client only when
set, so the agent's own defaults apply otherwise. The Supabase URL and the OIDC issuer reach
browsers and the page's CSP: https only. Each is useless without its partner (Supabase answers
401 without the anon key; OIDC needs a client id), so both or neither.
*/}}
{{- define "ragkeeper.agentWebEnv" -}}
{{- $web := .Values.agent.web -}}
- name: WEB_ENABLED
  value: {{ $web.enabled | toString | quote }}
{{- with $web.title }}
{{- if gt (len .) 80 }}
{{- fail "agent.web.title is longer than 80 characters (the agent refuses it)" }}
{{- end }}
- name: WEB_TITLE
  value: {{ . | quote }}
{{- end }}
{{- $supabase := $web.supabase -}}
{{- if or $supabase.url $supabase.anonKey }}
{{- include "ragkeeper.requireHttpsUrl" (list "agent.web.supabase.url" "project URL like https://<ref>.supabase.co" $supabase.url) }}
- name: WEB_SUPABASE_URL
  value: {{ $supabase.url | quote }}
- name: WEB_SUPABASE_ANON_KEY
  value: {{ required "agent.web.supabase.anonKey is required with agent.web.supabase.url" $supabase.anonKey | quote }}
{{- end }}
{{- $oidc := $web.oidc -}}
{{- if or $oidc.issuer $oidc.clientId }}
{{- include "ragkeeper.requireHttpsUrl" (list "agent.web.oidc.issuer" "issuer URL" $oidc.issuer) }}
- name: WEB_OIDC_ISSUER
  value: {{ $oidc.issuer | quote }}
- name: WEB_OIDC_CLIENT_ID
  value: {{ required "agent.web.oidc.clientId is required with agent.web.oidc.issuer" $oidc.clientId | quote }}
- name: WEB_OIDC_SCOPES
  value: {{ $oidc.scopes | quote }}
{{- end }}
{{- end -}}

{{/*
Files attached to chat messages (agent.attachments): ATTACHMENTS_ENABLED and the two size limits.
The limit of one message's files is at least one file's (the agent refuses to start otherwise):
JSON Schema cannot compare two values, so the chart fails here, before a pod crash-loops.
*/}}
{{- define "ragkeeper.agentAttachmentsEnv" -}}
{{- $files := .Values.agent.attachments -}}
{{- /* int64: a large number from values.yaml is a float, which would print as 1.048576e+07. */ -}}
{{- $file := int64 $files.maxFileBytes -}}
{{- $message := int64 $files.maxMessageBytes -}}
{{- if lt $message $file }}
{{- fail (printf "agent.attachments.maxMessageBytes (%d) must be at least agent.attachments.maxFileBytes (%d): a message may carry one file of the largest size" $message $file) }}
{{- end -}}
- name: ATTACHMENTS_ENABLED
  value: {{ $files.enabled | toString | quote }}
- name: MAX_ATTACHMENT_BYTES
  value: {{ $file | quote }}
- name: MAX_MESSAGE_ATTACHMENT_BYTES
  value: {{ $message | quote }}
{{- end -}}

{{/*
OTEL_* environment of the agent (agent.tracing), rendered only when an endpoint is set so a
default install exports nothing. The headers carry credentials: only ever a secretKeyRef.
*/}}
{{- define "ragkeeper.agentTracingEnv" -}}
{{- $tracing := .Values.agent.tracing -}}
{{- if or $tracing.endpoint $tracing.tracesEndpoint }}
{{- with $tracing.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $tracing.tracesEndpoint }}
- name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ $tracing.serviceName | quote }}
- name: OTEL_INCLUDE_CONTENT
  value: {{ $tracing.includeContent | toString | quote }}
{{- with $tracing.headersSecret.name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $tracing.headersSecret.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
RERANK_* environment of the agent (agent.rerank), rendered only when a provider is set so a
default install reranks nothing. The API key: only ever a secretKeyRef.
*/}}
{{- define "ragkeeper.agentRerankEnv" -}}
{{- $rerank := .Values.agent.rerank -}}
{{- if ne $rerank.provider "none" }}
- name: RERANK_PROVIDER
  value: {{ $rerank.provider | quote }}
- name: RERANK_BASE_URL
  value: {{ required "agent.rerank.baseUrl is required with agent.rerank.provider" $rerank.baseUrl | quote }}
{{- if eq $rerank.provider "cohere" }}
- name: RERANK_MODEL
  value: {{ required "agent.rerank.model is required when agent.rerank.provider is cohere" $rerank.model | quote }}
{{- else if $rerank.model }}
- name: RERANK_MODEL
  value: {{ $rerank.model | quote }}
{{- end }}
- name: RERANK_CANDIDATES
  value: {{ $rerank.candidates | quote }}
- name: RERANK_TIMEOUT_SECONDS
  value: {{ $rerank.timeoutSeconds | quote }}
- name: RERANK_MAX_RETRIES
  value: {{ $rerank.maxRetries | quote }}
{{- with $rerank.existingSecret }}
- name: RERANK_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $rerank.apiKeyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Which Redis the agent uses: "bundled" (redis.enabled), "external" (externalRedis.existingSecret)
or "" (none). Both at once is refused: the agent has one REDIS_URL.
*/}}
{{- define "ragkeeper.redis" -}}
{{- if and .Values.redis.enabled .Values.externalRedis.existingSecret -}}
{{- fail "redis.enabled and externalRedis.existingSecret are mutually exclusive: use the bundled Redis or your own, not both" -}}
{{- else if .Values.redis.enabled -}}
bundled
{{- else if .Values.externalRedis.existingSecret -}}
external
{{- end -}}
{{- end -}}

{{/*
REDIS_* environment of the agent, rendered only when a Redis is configured, so a default install
behaves as without Redis. The URL and the password: only ever secretKeyRefs (the bundled
Redis' Secret, or externalRedis.existingSecret).
*/}}
{{- define "ragkeeper.agentRedisEnv" -}}
{{- $mode := include "ragkeeper.redis" . -}}
{{- if $mode }}
{{- /* The Secret, the key of the URL and the key of the password (optional). */ -}}
{{- $ext := .Values.externalRedis -}}
{{- $from := dict "secret" $ext.existingSecret "url" $ext.urlKey "auth" $ext.passwordKey -}}
{{- if eq $mode "bundled" }}
{{- $from = dict "secret" (include "ragkeeper.componentName" (dict "root" . "component" "redis")) "url" "REDIS_URL" "auth" "REDIS_PASSWORD" -}}
{{- end }}
{{- $tuning := .Values.agent.redis }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $from.secret }}
      key: {{ $from.url }}
{{- with $from.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $from.secret }}
      key: {{ . }}
{{- end }}
- name: REDIS_SOCKET_TIMEOUT_SECONDS
  value: {{ $tuning.socketTimeoutSeconds | quote }}
- name: REDIS_CONNECT_TIMEOUT_SECONDS
  value: {{ $tuning.connectTimeoutSeconds | quote }}
- name: REDIS_MAX_CONNECTIONS
  value: {{ $tuning.maxConnections | quote }}
- name: REDIS_EMBEDDING_TTL_SECONDS
  value: {{ $tuning.embeddingTtlSeconds | quote }}
- name: REDIS_SEARCH_TTL_SECONDS
  value: {{ $tuning.searchTtlSeconds | quote }}
- name: REDIS_RETRY_SECONDS
  value: {{ $tuning.retrySeconds | quote }}
- name: REDIS_KEY_PREFIX
  value: {{ $tuning.keyPrefix | quote }}
{{- end }}
{{- end -}}

{{/*
Bytes of a memory size, or -1 when it is not one this can read: Kubernetes quantities (plain
bytes, k/M/G, Ki/Mi/Gi) and Redis sizes (kb/mb/gb are powers of 1024, k/m/g powers of 1000).
*/}}
{{- define "ragkeeper.bytes" -}}
{{- $v := toString . -}}
{{- $units := dict "" 1 "k" 1000 "K" 1000 "M" 1000000 "m" 1000000 "G" 1000000000 "g" 1000000000 "Ki" 1024 "kb" 1024 "KB" 1024 "Mi" 1048576 "mb" 1048576 "MB" 1048576 "Gi" 1073741824 "gb" 1073741824 "GB" 1073741824 -}}
{{- $m := regexFind "^[0-9]+(\\.[0-9]+)?" $v -}}
{{- $unit := trimPrefix $m $v -}}
{{- if and $m (hasKey $units $unit) -}}
{{- mulf (float64 $m) (index $units $unit) | int64 -}}
{{- else -}}
-1
{{- end -}}
{{- end -}}
