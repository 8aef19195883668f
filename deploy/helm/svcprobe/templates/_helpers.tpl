{{/* The chart's name, cut to 63 characters (a DNS label). */}}
{{- define "svcprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name. With release name "svcprobe" (the README's `helm install svcprobe`) it is
"svcprobe", the name deploy/base uses. Cut to 52 characters so "-hairpin-NN" still fits.
*/}}
{{- define "svcprobe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "svcprobe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "svcprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "svcprobe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "svcprobe.labels" -}}
{{ include "svcprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "svcprobe.chart" . }}
{{- end }}

{{- define "svcprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "svcprobe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "svcprobe.sharded" -}}
{{- if gt (int .Values.shards) 1 }}true{{ end }}
{{- end }}

{{- define "svcprobe.webConfigFile" -}}
{{- if or .Values.web.config.secretName .Values.web.config.configMapName }}
{{- printf "/etc/svcprobe/web/%s" .Values.web.config.key }}
{{- end }}
{{- end }}

{{/* --probe.vip-connections and --verdict.window (issue 16), only when not the exporter's defaults. */}}
{{- define "svcprobe.verdictArgs" -}}
{{- if ne (int (.probe.vipConnections | default 4)) 4 }}
- --probe.vip-connections={{ int .probe.vipConnections }}
{{- end }}
{{- if ne (int ((.verdict).window | default 8)) 8 }}
- --verdict.window={{ int .verdict.window }}
{{- end }}
{{- if not (include "svcprobe.watchWorkloads" .) }}
- --no-discovery.workloads
{{- end }}
{{- if not (include "svcprobe.watchNetworkPolicies" .) }}
- --no-discovery.network-policies
{{- end }}
{{- end }}

{{/* Non-empty when the exporter evaluates NetworkPolicies (discovery.networkPolicies, default true; issue 17). */}}
{{- define "svcprobe.watchNetworkPolicies" -}}
{{- if or (not .discovery) (not (hasKey .discovery "networkPolicies")) .discovery.networkPolicies }}true{{ end }}
{{- end }}

{{/* Non-empty when the exporter watches the workloads (discovery.workloads, default true; issue 17). */}}
{{- define "svcprobe.watchWorkloads" -}}
{{- if or (not .discovery) (not (hasKey .discovery "workloads")) .discovery.workloads }}true{{ end }}
{{- end }}

{{/* The exporter's flags (cmd/exporter/config.go); deploy/helm_test.go runs them through the binary. */}}
{{- define "svcprobe.args" -}}
- --web.listen-address=:{{ int .Values.web.port }}
- --probe.interval={{ .Values.probe.interval }}
- --probe.timeout={{ .Values.probe.timeout }}
- --probe.concurrency={{ int .Values.probe.concurrency }}
- --probe.max-new-conns-per-second={{ .Values.probe.maxNewConnsPerSecond }}
{{- if gt (int (.Values.probe.podSpread | default 1)) 1 }}
- --probe.pod.spread={{ int .Values.probe.podSpread }}
{{- end }}
{{- include "svcprobe.verdictArgs" .Values }}
- --dns.max-qps={{ .Values.dns.maxQPS }}
{{- if .Values.hairpin.enabled }}
{{- if include "svcprobe.sharded" . }}
- --hairpin.service={{ .Release.Namespace }}/{{ include "svcprobe.fullname" . }}-hairpin-$(SVCPROBE_SHARD)
{{- else }}
- --hairpin.service={{ .Release.Namespace }}/{{ include "svcprobe.fullname" . }}-hairpin
{{- end }}
{{- end }}
{{- if include "svcprobe.sharded" . }}
- --shard=$(SVCPROBE_SHARD)
- --total-shards={{ int .Values.shards }}
{{- end }}
{{- with .Values.namespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- with .Values.namespacesExclude }}
- --namespaces-exclude={{ join "," . }}
{{- end }}
{{- with .Values.selector }}
- --selector={{ . }}
{{- end }}
{{- range .Values.expectedServices }}
- --expect={{ . }}
{{- end }}
{{- range .Values.clusterCIDRs }}
- --cluster.cidr={{ . }}
{{- end }}
{{- range .Values.probe.allowExternal }}
- --probe.allow-external={{ . }}
{{- end }}
{{- with .Values.dns.clusterDomain }}
- --dns.cluster-domain={{ . }}
{{- end }}
{{- with .Values.dns.service }}
- --dns.service={{ . }}
{{- end }}
{{- range .Values.dns.nodeLocal }}
- --dns.node-local={{ . }}
{{- end }}
- --metrics.max-series-per-service={{ int .Values.metrics.maxSeriesPerService }}
{{- if .Values.metrics.perEndpoint }}
- --metrics.per-endpoint
- --metrics.per-endpoint-limit={{ int .Values.metrics.perEndpointLimit }}
{{- end }}
{{- with include "svcprobe.webConfigFile" . }}
- --web.config.file={{ . }}
{{- end }}
- --log.level={{ .Values.log.level }}
- --log.format={{ .Values.log.format }}
{{- range .Values.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}

{{/* The Pod template of the Deployment or the StatefulSet. */}}
{{- define "svcprobe.podTemplate" -}}
metadata:
  labels:
    {{- include "svcprobe.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "svcprobe.serviceAccountName" . }}
  automountServiceAccountToken: true
  {{- with include "svcprobe.pullSecrets" . }}
  imagePullSecrets:
    {{- . | trim | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: svcprobe
      image: {{ include "svcprobe.imageRef" (dict "img" .Values.image "tag" .Chart.AppVersion "root" .) | quote }}
      {{- with .Values.image.pullPolicy }}
      imagePullPolicy: {{ . }}
      {{- end }}
      args:
        {{- include "svcprobe.args" . | nindent 8 }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- if include "svcprobe.sharded" . }}
        - name: SVCPROBE_SHARD
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ int .Values.web.port }}
          protocol: TCP
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- $p := deepCopy . }}
        {{- if and $p.httpGet (eq $.Values.web.scheme "HTTPS") }}{{ $_ := set $p.httpGet "scheme" "HTTPS" }}{{ end }}
        {{- toYaml $p | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- $p := deepCopy . }}
        {{- if and $p.httpGet (eq $.Values.web.scheme "HTTPS") }}{{ $_ := set $p.httpGet "scheme" "HTTPS" }}{{ end }}
        {{- toYaml $p | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if include "svcprobe.webConfigFile" . }}
      volumeMounts:
        - name: web-config
          mountPath: /etc/svcprobe/web
          readOnly: true
      {{- end }}
  {{- if include "svcprobe.webConfigFile" . }}
  volumes:
    - name: web-config
      {{- if .Values.web.config.secretName }}
      secret:
        secretName: {{ .Values.web.config.secretName }}
      {{- else }}
      configMap:
        name: {{ .Values.web.config.configMapName }}
      {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The node agents (nodeAgent.*, the objects of deploy/node-agent and deploy/windows). Their name is
<fullname>-node, cut so "-hairpin" and "-windows" still fit in 63 characters.
*/}}
{{- define "svcprobe.nodeAgent.fullname" -}}
{{- printf "%s-node" (include "svcprobe.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{/*
Not app.kubernetes.io/name: <name>: the central exporter's Services (its hairpin Service above all)
must not select the agents. Both agents' Services select these; the DaemonSets add a component.
*/}}
{{- define "svcprobe.nodeAgent.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-node" (include "svcprobe.name" . | trunc 58 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "svcprobe.nodeAgent.labels" -}}
{{ include "svcprobe.nodeAgent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "svcprobe.chart" . }}
{{- end }}

{{/* The agents' job name: it must start with svcprobe (deploy/rules match job=~"svcprobe.*"). */}}
{{- define "svcprobe.nodeAgent.job" -}}
{{- $name := include "svcprobe.nodeAgent.fullname" . }}
{{- ternary $name (printf "svcprobe-%s" $name) (hasPrefix "svcprobe" $name) }}
{{- end }}

{{/* The agents' web config file: the central exporter's, at a path of the agent's OS. */}}
{{- define "svcprobe.nodeAgent.webConfigDir" -}}
{{- if .windows }}C:\etc\svcprobe-web{{ else }}/etc/svcprobe/web{{ end }}
{{- end }}

{{/*
A node agent's flags; dict "ctx" (the root context) "windows" (bool). deploy/helm_test.go compares
them with deploy/node-agent's and deploy/windows's and runs them through the binary.
*/}}
{{- define "svcprobe.nodeAgent.args" -}}
{{- $ := .ctx }}
{{- $v := $.Values }}
{{- $a := $v.nodeAgent -}}
- --mode=node
- --web.listen-address=:{{ int $v.web.port }}
- --probe.interval={{ $a.probe.interval | default $v.probe.interval }}
- --probe.timeout={{ $a.probe.timeout | default $v.probe.timeout }}
- --node.sample-size={{ int $a.sampleSize }}
- --node.pods={{ $a.pods }}
- --probe.concurrency={{ int $a.probe.concurrency }}
- --probe.max-new-conns-per-second={{ $a.probe.maxNewConnsPerSecond }}
{{- include "svcprobe.verdictArgs" $v }}
- --dns.max-qps={{ $a.dns.maxQPS }}
{{- if .windows }}
- --dns.resolv-conf=C:\etc\svcprobe\resolv.conf
{{- end }}
- --metrics.max-series-per-service={{ int $a.metrics.maxSeriesPerService }}
{{- if $v.hairpin.enabled }}
- --hairpin.service={{ $.Release.Namespace }}/{{ include "svcprobe.nodeAgent.fullname" $ }}-hairpin
{{- end }}
{{- with $v.namespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- with $v.namespacesExclude }}
- --namespaces-exclude={{ join "," . }}
{{- end }}
{{- with $v.selector }}
- --selector={{ . }}
{{- end }}
{{- range $v.clusterCIDRs }}
- --cluster.cidr={{ . }}
{{- end }}
{{- range $v.probe.allowExternal }}
- --probe.allow-external={{ . }}
{{- end }}
{{- with $v.dns.clusterDomain }}
- --dns.cluster-domain={{ . }}
{{- end }}
{{- with $v.dns.service }}
- --dns.service={{ . }}
{{- end }}
{{- range $v.dns.nodeLocal }}
- --dns.node-local={{ . }}
{{- end }}
{{- if include "svcprobe.webConfigFile" $ }}
- --web.config.file={{ include "svcprobe.nodeAgent.webConfigDir" . }}{{ if .windows }}\{{ else }}/{{ end }}{{ $v.web.config.key }}
{{- end }}
- --log.level={{ $v.log.level }}
- --log.format={{ $v.log.format }}
{{- range $a.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}

{{/*
A node agent's Pod template; dict "ctx" (the root context) "windows" (bool). Linux: the central
exporter's securityContexts (restricted). Windows: os.name windows, nodeAgent.windows.podSecurityContext
and no container securityContext (the API refuses the Linux-only fields there), resolv.conf from
the ConfigMap.
*/}}
{{- define "svcprobe.nodeAgent.podTemplate" -}}
{{- $ := .ctx }}
{{- $v := $.Values }}
{{- $a := $v.nodeAgent -}}
{{- $os := ternary $a.windows $a .windows -}}
metadata:
  labels:
    {{- include "svcprobe.nodeAgent.selectorLabels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "node-agent-windows" "node-agent-linux" .windows }}
    {{- with $a.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $a.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "svcprobe.serviceAccountName" $ }}
  automountServiceAccountToken: true
  {{- if .windows }}
  os:
    name: windows
  {{- end }}
  {{- with include "svcprobe.pullSecrets" $ }}
  imagePullSecrets:
    {{- . | trim | nindent 4 }}
  {{- end }}
  {{- with $a.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $os.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $os.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (ternary $a.windows.podSecurityContext $v.podSecurityContext .windows) }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (not .windows) $a.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  containers:
    - name: svcprobe
      {{- if .windows }}
      {{- $w := $a.windows.image }}
      {{- $wimg := dict "registry" $v.image.registry "repository" ($w.repository | default $v.image.repository) "tag" $w.tag "digest" $w.digest }}
      image: {{ include "svcprobe.imageRef" (dict "img" $wimg "tag" (printf "%s%s" ($v.image.tag | default $.Chart.AppVersion) $w.tagSuffix) "root" $) | quote }}
      {{- else }}
      image: {{ include "svcprobe.imageRef" (dict "img" $v.image "tag" $.Chart.AppVersion "root" $) | quote }}
      {{- end }}
      {{- with $v.image.pullPolicy }}
      imagePullPolicy: {{ . }}
      {{- end }}
      args:
        {{- include "svcprobe.nodeAgent.args" . | nindent 8 }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: HOST_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
      ports:
        - name: metrics
          containerPort: {{ int $v.web.port }}
          protocol: TCP
      {{- with $v.readinessProbe }}
      readinessProbe:
        {{- $p := deepCopy . }}
        {{- if and $p.httpGet (eq $v.web.scheme "HTTPS") }}{{ $_ := set $p.httpGet "scheme" "HTTPS" }}{{ end }}
        {{- toYaml $p | nindent 8 }}
      {{- end }}
      {{- with $v.livenessProbe }}
      livenessProbe:
        {{- $p := deepCopy . }}
        {{- if and $p.httpGet (eq $v.web.scheme "HTTPS") }}{{ $_ := set $p.httpGet "scheme" "HTTPS" }}{{ end }}
        {{- toYaml $p | nindent 8 }}
      {{- end }}
      {{- with $os.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if not .windows }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- if or .windows (include "svcprobe.webConfigFile" $) }}
      volumeMounts:
        {{- if .windows }}
        - name: resolv
          mountPath: C:\etc\svcprobe
          readOnly: true
        {{- end }}
        {{- if include "svcprobe.webConfigFile" $ }}
        - name: web-config
          mountPath: {{ include "svcprobe.nodeAgent.webConfigDir" . }}
          readOnly: true
        {{- end }}
      {{- end }}
  {{- if or .windows (include "svcprobe.webConfigFile" $) }}
  volumes:
    {{- if .windows }}
    - name: resolv
      configMap:
        name: {{ include "svcprobe.nodeAgent.fullname" $ }}-windows-resolv
    {{- end }}
    {{- if include "svcprobe.webConfigFile" $ }}
    - name: web-config
      {{- if $v.web.config.secretName }}
      secret:
        secretName: {{ $v.web.config.secretName }}
      {{- else }}
      configMap:
        name: {{ $v.web.config.configMapName }}
      {{- end }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The image reference: [registry/]repository, then @digest when set, else :tag (default the
appVersion). registry is global.imageRegistry, else image.registry, else none (repository holds
the whole path). Called with (dict "img" <image values> "tag" <default tag> "root" $). */}}
{{- define "svcprobe.imageRef" -}}
{{- $registry := ((.root.Values.global).imageRegistry) | default .img.registry -}}
{{- $repo := .img.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .img.digest -}}
{{ $repo }}@{{ .img.digest }}
{{- else -}}
{{ $repo }}:{{ .img.tag | default .tag }}
{{- end -}}
{{- end }}

{{/* imagePullSecrets: global.imagePullSecrets and imagePullSecrets, as the Pod wants them. */}}
{{- define "svcprobe.pullSecrets" -}}
{{- $secrets := concat (((.Values.global).imagePullSecrets) | default list) (.Values.imagePullSecrets | default list) -}}
{{- range $secrets }}
- {{ if kindIs "string" . }}name: {{ . }}{{ else }}{{ toYaml . }}{{ end }}
{{- end }}
{{- end }}
