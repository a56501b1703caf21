{{/*
Names, labels, the checks of the values (each fails rendering with a message
naming the value) and the two generated Caddyfiles.
*/}}

{{- define "caddy-spawn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "caddy-spawn.fullname" -}}
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

{{/* The nodes' DaemonSet, ConfigMap and headless Service. */}}
{{- define "caddy-spawn.nodeName" -}}
{{- printf "%s-node" (include "caddy-spawn.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The front's Deployment, ConfigMap and Service. */}}
{{- define "caddy-spawn.frontName" -}}
{{- printf "%s-front" (include "caddy-spawn.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The DNS name the front resolves (dynamic a): the headless Service. */}}
{{- define "caddy-spawn.nodeDNSName" -}}
{{- printf "%s.%s.svc.%s" (include "caddy-spawn.nodeName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "caddy-spawn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "node"). */}}
{{- define "caddy-spawn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caddy-spawn.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "caddy-spawn.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* socket mode: the node's own containerd */}}
{{- define "caddy-spawn.socketMode" -}}
{{- if .Values.containerd.address }}true{{ end }}
{{- end }}

{{/* The spawn run_dir inside the node pod. */}}
{{- define "caddy-spawn.runDir" -}}
{{- if include "caddy-spawn.socketMode" . }}{{ .Values.node.runDir }}{{ else }}/run/spawn/state{{ end }}
{{- end }}

{{/*
A whole number of seconds, or a failure naming the value: call with
(list <value> <name>); returns the number as a string.
*/}}
{{- define "caddy-spawn.seconds" -}}
{{- $v := index . 0 }}{{ $name := index . 1 }}
{{- if kindIs "invalid" $v }}
{{- fail (printf "%s: needed (a whole number of seconds)" $name) }}
{{- end }}
{{- if not (regexMatch "^[0-9]+$" (toString $v)) }}
{{- fail (printf "%s: %v must be a whole number of seconds" $name $v) }}
{{- end }}
{{- toString $v }}
{{- end }}

{{/* The longest route timeoutSeconds. */}}
{{- define "caddy-spawn.longestTimeout" -}}
{{- $max := 0 }}
{{- range $i, $r := .Values.routes }}
{{- $t := include "caddy-spawn.seconds" (list $r.timeoutSeconds (printf "routes[%d].timeoutSeconds" $i)) | atoi }}
{{- if gt $t $max }}{{ $max = $t }}{{ end }}
{{- end }}
{{- $max }}
{{- end }}

{{/* Seconds the preStop drain waits: set, or the longest timeout + margin. */}}
{{- define "caddy-spawn.drainTimeout" -}}
{{- $longest := include "caddy-spawn.longestTimeout" . | atoi }}
{{- $set := include "caddy-spawn.seconds" (list .Values.node.drainTimeoutSeconds "node.drainTimeoutSeconds") | atoi }}
{{- $margin := include "caddy-spawn.seconds" (list .Values.node.drainMarginSeconds "node.drainMarginSeconds") | atoi }}
{{- if eq $set 0 }}
{{- add $longest $margin }}
{{- else if lt $set $longest }}
{{- fail (printf "node.drainTimeoutSeconds: %d is shorter than the longest route timeoutSeconds (%d): a drain would cut requests short; raise it or leave it 0 to derive it" $set $longest) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: set, or drain + stop margin. */}}
{{- define "caddy-spawn.gracePeriod" -}}
{{- $drain := include "caddy-spawn.drainTimeout" . | atoi }}
{{- $stop := include "caddy-spawn.seconds" (list .Values.node.stopMarginSeconds "node.stopMarginSeconds") | atoi }}
{{- $set := include "caddy-spawn.seconds" (list .Values.node.terminationGracePeriodSeconds "node.terminationGracePeriodSeconds") | atoi }}
{{- $min := add $drain $stop }}
{{- if eq $set 0 }}
{{- $min }}
{{- else if lt $set $min }}
{{- fail (printf "node.terminationGracePeriodSeconds: %d is shorter than the drain timeout (%d s, from the longest route timeoutSeconds) + node.stopMarginSeconds (%d s) = %d: the kubelet would kill nodes with requests in flight and containers not yet removed; raise it or leave it 0 to derive it" $set $drain $stop $min) }}
{{- else }}
{{- $set }}
{{- end }}
{{- end }}

{{/* A Caddyfile token, double-quoted. */}}
{{- define "caddy-spawn.word" -}}
{{- $s := toString . }}
{{- if or (contains "\n" $s) (contains "`" $s) }}
{{- fail (printf "%q: newlines and backquotes are not allowed in Caddyfile words" $s) }}
{{- end }}
{{- printf "\"%s\"" (replace "\"" "\\\"" $s) }}
{{- end }}

{{/* Every check of the values; templates include it once. */}}
{{- define "caddy-spawn.validate" -}}
{{- if not .Values.routes }}
{{- fail "routes: at least one route is needed (name, path, image)" }}
{{- end }}
{{- $names := dict }}
{{- $paths := dict }}
{{- range $i, $r := .Values.routes }}
{{- $at := printf "routes[%d]" $i }}
{{- if not (kindIs "map" $r) }}
{{- fail (printf "%s: must be a map with name, path and image" $at) }}
{{- end }}
{{- $allowed := list "name" "path" "image" "command" "args" "output" "pool" "timeoutSeconds" "limits" "maxConcurrent" "queueTimeoutSeconds" "env" "pullPolicy" "extra" }}
{{- range $k, $_ := $r }}
{{- if not (has $k $allowed) }}
{{- fail (printf "%s.%s: unknown route field (known: %s)" $at $k (join ", " $allowed)) }}
{{- end }}
{{- end }}
{{- $name := toString (default "" $r.name) }}
{{- if or (not (regexMatch "^[a-z0-9]+(-[a-z0-9]+)*$" $name)) (gt (len $name) 40) }}
{{- fail (printf "%s.name: %q must be 1-40 lowercase letters and digits, separated by single '-'" $at $name) }}
{{- end }}
{{- if hasKey $names $name }}
{{- fail (printf "%s.name: %q is used by another route" $at $name) }}
{{- end }}
{{- $_ := set $names $name true }}
{{- $path := toString (default "" $r.path) }}
{{- if not (hasPrefix "/" $path) }}
{{- fail (printf "%s.path: %q must start with '/'" $at $path) }}
{{- end }}
{{- if or (contains " " $path) (hasKey $paths $path) }}
{{- fail (printf "%s.path: %q must be one path matcher, unique among routes" $at $path) }}
{{- end }}
{{- $_ := set $paths $path true }}
{{- if or (not $r.image) (contains " " (toString $r.image)) }}
{{- fail (printf "%s.image: an image reference is needed" $at) }}
{{- end }}
{{- if not (hasKey $r "timeoutSeconds") }}
{{- fail (printf "%s.timeoutSeconds: needed (the node's grace period is derived from it)" $at) }}
{{- end }}
{{- if eq (include "caddy-spawn.seconds" (list $r.timeoutSeconds (printf "%s.timeoutSeconds" $at))) "0" }}
{{- fail (printf "%s.timeoutSeconds: must be at least 1" $at) }}
{{- end }}
{{- if hasKey $r "pool" }}
{{- if not (regexMatch "^[0-9]+$" (toString $r.pool)) }}
{{- fail (printf "%s.pool: %v must be a whole number (0 = always cold)" $at $r.pool) }}
{{- end }}
{{- end }}
{{- if hasKey $r "queueTimeoutSeconds" }}
{{- $_ := include "caddy-spawn.seconds" (list $r.queueTimeoutSeconds (printf "%s.queueTimeoutSeconds" $at)) }}
{{- end }}
{{- if and (hasKey $r "output") (not (has $r.output (list "cgi" "raw"))) }}
{{- fail (printf "%s.output: %q must be cgi or raw" $at $r.output) }}
{{- end }}
{{- if and (hasKey $r "pullPolicy") (not (has $r.pullPolicy (list "missing" "always" "never"))) }}
{{- fail (printf "%s.pullPolicy: %q must be missing, always or never" $at $r.pullPolicy) }}
{{- end }}
{{- range $k, $_ := (default dict $r.limits) }}
{{- if not (has $k (list "memory" "cpus" "pids" "disk" "nofile" "maxRequestBody" "maxResponseBytes")) }}
{{- fail (printf "%s.limits.%s: unknown limit (known: memory, cpus, pids, disk, nofile, maxRequestBody, maxResponseBytes)" $at $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.containerd.address }}
{{- if not (hasPrefix "/" .) }}
{{- fail (printf "containerd.address: %q must be the absolute path of the node's containerd socket" .) }}
{{- end }}
{{- if not (hasPrefix "/" $.Values.node.runDir) }}
{{- fail (printf "node.runDir: %q must be an absolute path (a hostPath at the same path)" $.Values.node.runDir) }}
{{- end }}
{{- end }}
{{- if not (hasPrefix "/" .Values.node.hostDir) }}
{{- fail (printf "node.hostDir: %q must be an absolute path" .Values.node.hostDir) }}
{{- end }}
{{- if has .Values.spawn.namespace (list "" "default" "k8s.io" "moby") }}
{{- fail (printf "spawn.namespace: %q is not ours: use a namespace dedicated to this chart (default caddy-spawn)" .Values.spawn.namespace) }}
{{- end }}
{{- if not (has .Values.spawn.fastPath (list "auto" "on" "off")) }}
{{- fail (printf "spawn.fastPath: %q must be auto, on or off" .Values.spawn.fastPath) }}
{{- end }}
{{- $ports := list (int .Values.node.port) (int .Values.node.statusPort) }}
{{- if eq (index $ports 0) (index $ports 1) }}
{{- fail (printf "node.statusPort: %d is node.port too; they must differ" (index $ports 1)) }}
{{- end }}
{{- $_ := include "caddy-spawn.gracePeriod" . }}
{{- end }}

{{/* The node's Caddyfile. */}}
{{- define "caddy-spawn.nodeCaddyfile" -}}
# Generated by the caddy-spawn chart from its values; edit the values.
{
	# The admin API on a unix socket inside the pod: no function reaches it.
	admin unix//run/spawn/admin.sock
	persist_config off
	auto_https off
	# Caddy's own shutdown wait once the preStop drain has run.
	grace_period {{ include "caddy-spawn.drainTimeout" . }}s
	spawn {
		namespace {{ include "caddy-spawn.word" .Values.spawn.namespace }}
		run_dir {{ include "caddy-spawn.runDir" . }}
		fast_path {{ .Values.spawn.fastPath }}
		image_wait {{ include "caddy-spawn.seconds" (list .Values.spawn.imageWaitSeconds "spawn.imageWaitSeconds") }}s
		{{- if .Values.spawn.maxContainers }}
		max_containers {{ int .Values.spawn.maxContainers }}
		{{- end }}
		{{- if include "caddy-spawn.socketMode" . }}
		address {{ .Values.containerd.address }}
		{{- else }}
		managed {
			root {{ .Values.node.hostDir }}/containerd
			log_level {{ .Values.containerd.logLevel }}
		}
		{{- end }}
	}
}

:{{ int .Values.node.port }} {
{{- range .Values.routes }}
	spawn {{ .path }} {{ .image }} {
		name {{ .name }}
		timeout {{ .timeoutSeconds }}s
		{{- if hasKey . "pool" }}
		pool {{ .pool }}
		{{- end }}
		{{- with .command }}
		command{{ range . }} {{ include "caddy-spawn.word" . }}{{ end }}
		{{- end }}
		{{- with .args }}
		args{{ range . }} {{ include "caddy-spawn.word" . }}{{ end }}
		{{- end }}
		{{- with .output }}
		output {{ . }}
		{{- end }}
		{{- with .pullPolicy }}
		pull_policy {{ . }}
		{{- end }}
		{{- with .limits }}
		{{- with .memory }}
		memory {{ . }}
		{{- end }}
		{{- with .cpus }}
		cpus {{ . }}
		{{- end }}
		{{- with .pids }}
		pids {{ . }}
		{{- end }}
		{{- with .disk }}
		disk {{ . }}
		{{- end }}
		{{- with .nofile }}
		nofile {{ . }}
		{{- end }}
		{{- with .maxRequestBody }}
		max_request_body {{ . }}
		{{- end }}
		{{- with .maxResponseBytes }}
		max_response_bytes {{ . }}
		{{- end }}
		{{- end }}
		{{- with .maxConcurrent }}
		max_concurrent {{ . }}
		{{- end }}
		{{- if hasKey . "queueTimeoutSeconds" }}
		queue_timeout {{ .queueTimeoutSeconds }}s
		{{- end }}
		{{- range $k, $v := .env }}
		env {{ include "caddy-spawn.word" $k }} {{ include "caddy-spawn.word" $v }}
		{{- end }}
		{{- range .extra }}
		{{ . }}
		{{- end }}
	}
{{- end }}
}

# The status site: GET /status, GET /ready (the readiness probe), POST /drain
# (the preStop hook), and Prometheus metrics.
:{{ int .Values.node.statusPort }} {
	route {
		metrics /metrics
		spawn_status
	}
}
{{- end }}

{{/* The front's Caddyfile. */}}
{{- define "caddy-spawn.frontCaddyfile" -}}
# Generated by the caddy-spawn chart from its values; edit the values.
{
	admin off
	persist_config off
	auto_https off
}

:{{ int .Values.front.port }} {
	reverse_proxy {
		# Every ready node: the headless Service lists only ready pods.
		dynamic a {
			name {{ include "caddy-spawn.nodeDNSName" . }}
			port {{ int .Values.node.port }}
			refresh {{ include "caddy-spawn.seconds" (list .Values.front.refreshSeconds "front.refreshSeconds") }}s
		}
		{{- if .Values.front.policyOptions }}
		lb_policy spawn_warm {
			{{- range .Values.front.policyOptions }}
			{{ . }}
			{{- end }}
		}
		{{- else }}
		lb_policy spawn_warm
		{{- end }}
		lb_retries {{ int .Values.front.retries }}
		lb_try_duration {{ include "caddy-spawn.seconds" (list .Values.front.tryDurationSeconds "front.tryDurationSeconds") }}s
		# A node refused before it read the body (draining, overloaded,
		# not-ready): the request is sent to another node. Dial errors are
		# always retried.
		lb_retry_match {
			expression `{rp.status_code} == 503 && {rp.header.Spawn-Refused} != ""`
		}
		# The nodes' warm-count report is for the front only.
		header_down -Spawn-Warm
	}
}

:{{ int .Values.front.healthPort }} {
	respond /ready "ready" 200
}
{{- end }}
