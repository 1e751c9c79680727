{{/* The RayCluster spec: the release's RayCluster and every RayJob's rayClusterSpec
     render the same text. */}}

{{/* spec of a RayCluster; also the RayJob's rayClusterSpec. */}}
{{- define "rt.rayClusterSpec" -}}
rayVersion: {{ .Values.ray.version | quote }}
{{- if eq .Values.auth.mode "token" }}
authOptions:
  mode: token
  {{- with (include "rt.authSecretName" .) }}
  secretName: {{ . }}
  {{- end }}
{{- else }}
authOptions:
  mode: disabled
{{- end }}
{{- if .Values.autoscaling.enabled }}
enableInTreeAutoscaling: true
autoscalerOptions:
  version: v2
  idleTimeoutSeconds: {{ .Values.autoscaling.idleTimeoutSeconds }}
  upscalingMode: {{ .Values.autoscaling.upscalingMode }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  resources:
    {{- toYaml .Values.autoscaling.resources | nindent 4 }}
  securityContext:
    {{- include "rt.raySecurityContext" . | nindent 4 }}
{{- end }}
headGroupSpec:
  rayStartParams:
    {{- include "rt.rayStartParams" .Values.head | nindent 4 }}
  template:
    metadata:
      {{- include "rt.rayPodMetadata" (list . .Values.head "") | nindent 6 }}
    spec:
      {{- include "rt.rayPodSpec" (list . .Values.head "head") | nindent 6 }}
      containers:
        {{- include "rt.rayContainer" (list . .Values.head "head") | nindent 8 }}
workerGroupSpecs:
{{- range $name, $g := .Values.workerGroups }}
{{- if ne (toString $g.enabled) "false" }}
  - groupName: {{ $name }}
    replicas: {{ $g.replicas }}
    minReplicas: {{ $g.minReplicas | default 0 }}
    maxReplicas: {{ $g.maxReplicas | default $g.replicas }}
    {{- if and $.Values.autoscaling.enabled (gt (int ($g.idleTimeoutSeconds | default 0)) 0) }}
    idleTimeoutSeconds: {{ $g.idleTimeoutSeconds }}
    {{- end }}
    rayStartParams:
      {{- include "rt.rayStartParams" $g | nindent 6 }}
    template:
      metadata:
        {{- include "rt.rayPodMetadata" (list $ $g $name) | nindent 8 }}
      spec:
        {{- include "rt.rayPodSpec" (list $ $g "worker") | nindent 8 }}
        containers:
          {{- include "rt.rayContainer" (list $ $g "worker") | nindent 10 }}
{{- end }}
{{- end }}
{{- end -}}
