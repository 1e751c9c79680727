{{/* The RayJob spec: the release's RayJob, the scheduled runs' template (retrain-cronjob.yaml)
     and RayCronJob's jobTemplate render the same text. */}}
{{- define "rt.rayJobSpec" -}}
{{- $j := .Values.job -}}
entrypoint: {{ include "rt.entrypoint" . | quote }}
{{- with $j.runtimeEnv }}
runtimeEnvYAML: |
  {{- toYaml . | nindent 2 }}
{{- end }}
submissionMode: {{ $j.submissionMode }}
shutdownAfterJobFinishes: {{ $j.shutdownAfterJobFinishes }}
{{- if gt (int $j.ttlSecondsAfterFinished) 0 }}
ttlSecondsAfterFinished: {{ $j.ttlSecondsAfterFinished }}
{{- end }}
{{- if gt (int $j.activeDeadlineSeconds) 0 }}
activeDeadlineSeconds: {{ $j.activeDeadlineSeconds }}
{{- end }}
{{- if gt (int ($j.preRunningDeadlineSeconds | default 0)) 0 }}
preRunningDeadlineSeconds: {{ $j.preRunningDeadlineSeconds }}
{{- end }}
{{- if gt (int $j.backoffLimit) 0 }}
backoffLimit: {{ $j.backoffLimit }}
{{- end }}
{{- with $j.deletionStrategy }}
deletionStrategy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $j.suspend }}
suspend: true
{{- end }}
{{- if $j.clusterSelector }}
clusterSelector:
  {{- toYaml $j.clusterSelector | nindent 2 }}
{{- else }}
rayClusterSpec:
  {{- include "rt.rayClusterSpec" . | nindent 2 }}
{{- end }}
{{- if eq $j.submissionMode "K8sJobMode" }}
submitterConfig:
  backoffLimit: {{ $j.submitterBackoffLimit }}
submitterPodTemplate:
  metadata:
    labels:
      {{- include "rt.componentLabels" (list . "submitter") | nindent 6 }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "rt.serviceAccountName" . }}
    automountServiceAccountToken: false
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    {{- with .Values.image.pullSecrets }}
    imagePullSecrets:
      {{- range . }}
      - name: {{ . }}
      {{- end }}
    {{- end }}
    containers:
      # KubeRay fills in the `ray job submit` command and, with authOptions,
      # RAY_AUTH_MODE/RAY_AUTH_TOKEN.
      - name: ray-job-submitter
        image: {{ include "rt.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        workingDir: /tmp
        env:
          {{- if eq .Values.auth.mode "disabled" }}
          - name: RAY_AUTH_MODE
            value: disabled
          {{- end }}
          # Read-only root filesystem: home and caches on the tmp emptyDir.
          - name: HOME
            value: /tmp
          - name: XDG_CACHE_HOME
            value: /tmp/.cache
        resources:
          {{- toYaml $j.submitter.resources | nindent 10 }}
        securityContext:
          {{- toYaml .Values.containerSecurityContext | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- if include "rt.devSyncTarget" (list . (include "rt.image" .)) }}
          {{- include "rt.devSyncMount" . | nindent 10 }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 1Gi
      {{- if include "rt.devSyncTarget" (list . (include "rt.image" .)) }}
      {{- include "rt.devSyncVolume" . | nindent 6 }}
      {{- end }}
{{- end }}
{{- end -}}
