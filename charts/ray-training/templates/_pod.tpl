{{/* The Ray pod shared by head and worker groups: volumes, mounts, env, resources, the
     pod-level fields and the Ray container. */}}

{{/* Args: (list $ $group). /dev/shm holds Ray's object store plus storage.shmSize for
     other shared memory (PyTorch DataLoader workers, NCCL); it counts against the memory limit. */}}
{{- define "rt.rayVolumes" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
{{- $shm := add (include "rt.objectStoreBytes" $g | int64) (include "rt.memBytes" $.Values.storage.shmSize | int64) -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ printf "%dMi" (div (add $shm 1048575) 1048576) }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $.Values.storage.tmpSize }}
- name: work
  emptyDir: {}
{{- if eq $.Values.storage.type "pvc" }}
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "rt.pvcName" $ }}
{{- end }}
{{- with $g.volumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Args: (list $ $group) */}}
{{- define "rt.rayVolumeMounts" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
- name: shm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
- name: work
  mountPath: /work
{{- if eq $.Values.storage.type "pvc" }}
- name: shared
  mountPath: {{ $.Values.storage.pvc.mountPath }}
{{- end }}
{{- with $g.volumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Env every Ray container and the submitter get. */}}
{{- define "rt.rayEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "rt.trackingUri" . | quote }}
{{- if .Values.mlflow.auth.enabled }}
# MLflow's basic-auth app: the driver, the promotion gate and rank-0 workers write as this user.
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "rt.mlflowAuthSecretName" . }}, key: username}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "rt.mlflowAuthSecretName" . }}, key: password}
{{- end }}
# The root filesystem is read-only: home, caches and matplotlib's config live on the work emptyDir
# (Ray writes ~/.ray, MLflow and pip their caches).
- name: HOME
  value: /work
- name: XDG_CACHE_HOME
  value: /work/.cache
- name: MPLCONFIGDIR
  value: /work/.config/matplotlib
{{- if .Values.storage.objectStore.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.storage.objectStore.endpointUrl | quote }}
{{- end }}
{{- if eq .Values.auth.mode "disabled" }}
# Ray 2.60 enables token auth by default; disabled was acknowledged in values.
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- end -}}

{{/* The object store credentials, then the group's own envFrom. Args: (list $ $group) */}}
{{- define "rt.rayEnvFrom" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
{{- if or $.Values.storage.objectStore.credentialsSecret $g.envFrom }}
envFrom:
  {{- with $.Values.storage.objectStore.credentialsSecret }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with $g.envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Resources with the GPU count folded into requests and limits. Args: (list resources gpus) */}}
{{- define "rt.resources" -}}
{{- $res := deepCopy (index . 0) -}}
{{- $gpus := index . 1 | default 0 | int -}}
{{- if gt $gpus 0 -}}
{{- $_ := set $res.limits "nvidia.com/gpu" $gpus -}}
{{- $_ := set $res.requests "nvidia.com/gpu" $gpus -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Labels and annotations of a Ray pod: the release's, the worker group's name (workers),
     then the group's own `labels` (keys the chart sets are refused by the schema and
     rt.validate) and `annotations` over the global podAnnotations.
     Args: (list $ $group groupName) with groupName "" for the head. */}}
{{- define "rt.rayPodMetadata" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
labels:
  {{- include "rt.componentLabels" (list $ "ray") | nindent 2 }}
  {{- with index . 2 }}
  ray-training/worker-group: {{ . }}
  {{- end }}
  {{- with $g.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with merge (deepCopy ($g.annotations | default dict)) $.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The group's initContainers; each without an image, securityContext or resources gets
     the chart's image, containerSecurityContext and the group's CPU and memory (no GPUs: the
     pod's effective request stays the Ray container's). Args: (list $ $group) */}}
{{- define "rt.initContainers" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
{{- $out := list -}}
{{- range $g.initContainers -}}
{{- $c := deepCopy . -}}
{{- if not $c.image -}}
{{- $_ := set $c "image" (include "rt.rayImage" $) -}}
{{- $_ := set $c "imagePullPolicy" (default $.Values.image.pullPolicy $c.imagePullPolicy) -}}
{{- end -}}
{{- if not $c.securityContext -}}
{{- $_ := set $c "securityContext" (deepCopy $.Values.containerSecurityContext) -}}
{{- end -}}
{{- if not $c.resources -}}
{{- $_ := set $c "resources" (deepCopy $g.resources) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Pod-level fields shared by head and workers. Args: (list $ $group "head"|"worker") */}}
{{- define "rt.rayPodSpec" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
serviceAccountName: {{ include "rt.serviceAccountName" $ }}
automountServiceAccountToken: {{ and $.Values.autoscaling.enabled (eq (index . 2) "head") }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with $.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $g.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $g.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $g.initContainers }}
initContainers:
  {{- include "rt.initContainers" (list $ $g) | nindent 2 }}
{{- end }}
volumes:
  {{- include "rt.rayVolumes" (list $ $g) | nindent 2 }}
{{- end -}}

{{/* The Ray container. Args: (list $ $group "head"|"worker") */}}
{{- define "rt.rayContainer" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
{{- $role := index . 2 -}}
- name: {{ ternary "ray-head" "ray-worker" (eq $role "head") }}
  image: {{ include "rt.rayImage" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  workingDir: /work
  {{- if eq $role "head" }}
  ports:
    - name: gcs-server
      containerPort: 6379
    - name: dashboard
      containerPort: 8265
    - name: client
      containerPort: 10001
    - name: metrics
      containerPort: 8080
  {{- else }}
  ports:
    - name: metrics
      containerPort: 8080
  {{- end }}
  env:
    {{- include "rt.rayEnv" $ | nindent 4 }}
    {{- with $g.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (include "rt.rayEnvFrom" (list $ $g)) }}
  {{- . | nindent 2 }}
  {{- end }}
  resources:
    {{- include "rt.resources" (list $g.resources ($g.gpus | default 0)) | nindent 4 }}
  securityContext:
    {{- include "rt.raySecurityContext" $ | nindent 4 }}
  volumeMounts:
    {{- include "rt.rayVolumeMounts" (list $ $g) | nindent 4 }}
{{- end -}}

{{/* The security context of the Ray containers and KubeRay's autoscaler beside the head's (it
     runs the head's image). With devSync, skaffold's file sync writes into the image's app
     directory of every running container of that image, and these run the synced code. */}}
{{- define "rt.raySecurityContext" -}}
{{- $sc := deepCopy .Values.containerSecurityContext -}}
{{- if .Values.devSync.enabled -}}
{{- $_ := set $sc "readOnlyRootFilesystem" false -}}
{{- end -}}
{{- toYaml $sc -}}
{{- end -}}

{{/* The image's app directory: the Dockerfile's WORKDIR, first on its PYTHONPATH, and where
     skaffold.yaml's dev profile syncs training/ to. */}}
{{- define "rt.appDir" -}}
/home/ray/app
{{- end -}}

{{/* skaffold's file sync (devSync.enabled) copies training/ into the app directory of every
     running container of the image it built, not only the Ray pods', and one copy that fails
     fails the whole sync ("Skipping deploy due to sync error"). Containers of that image that
     never run the project's code (MLflow, the submitter, `helm test`) keep their read-only root
     and take the copy in an emptyDir there, which nothing reads. Args: (list $ <container image>);
     renders "true" or nothing. */}}
{{- define "rt.devSyncTarget" -}}
{{- $ := index . 0 -}}
{{- if and $.Values.devSync.enabled (has (index . 1) (list (include "rt.image" $) (include "rt.rayImage" $))) -}}
true
{{- end -}}
{{- end -}}

{{/* The emptyDir of rt.devSyncTarget and its mount; training/ is well under 1 MB. */}}
{{- define "rt.devSyncVolume" -}}
- name: dev-sync
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "rt.devSyncMount" -}}
- name: dev-sync
  mountPath: {{ include "rt.appDir" . }}
{{- end -}}
