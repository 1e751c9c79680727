{{/* Names ------------------------------------------------------------------ */}}

{{- define "rt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* 40 characters leave room for the suffixes below and KubeRay's own
     (`-head-svc`, `-<group>-worker-xxxxx`, the RayJob's `-r<revision>`). */}}
{{- define "rt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rt.labels" -}}
helm.sh/chart: {{ include "rt.chart" . }}
{{ include "rt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ray-training
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: include "rt.componentLabels" (list . "mlflow") */}}
{{- define "rt.componentLabels" -}}
{{ include "rt.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "rt.componentSelectorLabels" -}}
{{ include "rt.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "rt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rt.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "rt.mlflowImage" -}}
{{- if .Values.mlflow.image.repository -}}
{{- printf "%s:%s" .Values.mlflow.image.repository (default "latest" .Values.mlflow.image.tag) -}}
{{- else -}}
{{- include "rt.image" . -}}
{{- end -}}
{{- end -}}

{{- define "rt.mlflowName" -}}
{{- printf "%s-mlflow" (include "rt.fullname" .) -}}
{{- end -}}

{{- define "rt.authSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else if .Values.auth.createSecret -}}
{{- printf "%s-ray-auth" (include "rt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "rt.pvcName" -}}
{{- default (printf "%s-shared" (include "rt.fullname" .)) .Values.storage.pvc.existingClaim -}}
{{- end -}}

{{/* The RayJob name: fixed (job.name, <fullname>-r<revision> or <fullname>-<spec hash>) or a generateName prefix. */}}
{{- define "rt.jobName" -}}
{{- if .Values.job.name -}}
{{- .Values.job.name -}}
{{- else if .Values.job.generateName -}}
{{- printf "%s-" (include "rt.fullname" .) -}}
{{- else if eq (.Values.job.naming | default "revision") "configHash" -}}
{{- /* GitOps (Argo CD renders with revision 1 every time): the name follows the
     RayJob spec, so a merged change to it is a new run, not an ignored edit. */ -}}
{{- printf "%s-%s" (include "rt.fullname" . | trunc 38 | trimSuffix "-") (include "rt.rayJobSpec" . | sha256sum | trunc 8) -}}
{{- else -}}
{{- printf "%s-r%d" (include "rt.fullname" .) (int .Release.Revision) -}}
{{- end -}}
{{- end -}}

{{/* Resources -------------------------------------------------------------- */}}

{{/* CPU quantity ("2", 2, "1500m", "0.5") -> millicores. */}}
{{- define "rt.cpuMillis" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{- trimSuffix "m" $q | int -}}
{{- else -}}
{{- mulf (float64 $q) 1000 | int -}}
{{- end -}}
{{- end -}}

{{/* Memory quantity ("16Gi", "8G", "512Mi", 1073741824) -> bytes. */}}
{{- define "rt.memBytes" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $num := regexFind "^[0-9.]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- mulf (float64 $num) (index $units $unit | default 1) | int64 -}}
{{- end -}}

{{/* Ray's object store of one pod, in bytes: rayStartParams.object-store-memory, else
     objectStoreMemory, else 30% of the pod's memory limit (Ray's own default fraction,
     but of the pod's limit rather than the node's RAM Ray would see). Args: group values */}}
{{- define "rt.objectStoreBytes" -}}
{{- $explicit := index (.rayStartParams | default dict) "object-store-memory" -}}
{{- if $explicit -}}
{{- $explicit | int64 -}}
{{- else if .objectStoreMemory -}}
{{- include "rt.memBytes" .objectStoreMemory -}}
{{- else -}}
{{- mulf (include "rt.memBytes" .resources.limits.memory | float64) 0.3 | int64 -}}
{{- end -}}
{{- end -}}

{{/* rayStartParams with object-store-memory filled in. Args: group values */}}
{{- define "rt.rayStartParams" -}}
{{- $p := deepCopy (.rayStartParams | default dict) -}}
{{- $_ := set $p "object-store-memory" (include "rt.objectStoreBytes" . | toString) -}}
{{- toYaml $p -}}
{{- end -}}

{{/* What Ray Train asks for, derived from the worker group it trains on (one
     source of truth): {"group", "numWorkers", "cpus", "gpus"} as JSON. */}}
{{- define "rt.train" -}}
{{- $gname := .Values.train.workerGroup -}}
{{- $g := index .Values.workerGroups $gname | default dict -}}
{{- $limits := (($g.resources | default dict).limits | default dict) -}}
{{- $podCpus := div (include "rt.cpuMillis" ($limits.cpu | default "0") | int) 1000 -}}
{{- $cpus := .Values.train.cpusPerWorker | default $podCpus -}}
{{- dict "group" $gname "numWorkers" ($g.replicas | default 0 | int) "cpus" $cpus "podCpus" $podCpus "gpus" ($g.gpus | default 0 | int) | toJson -}}
{{- end -}}

{{- define "rt.storagePath" -}}
{{- if eq .Values.storage.type "pvc" -}}
{{- printf "%s/ray_results" (trimSuffix "/" .Values.storage.pvc.mountPath) -}}
{{- else -}}
{{- printf "%s/ray_results" (trimSuffix "/" .Values.storage.objectStore.uri) -}}
{{- end -}}
{{- end -}}

{{- define "rt.dataBase" -}}
{{- if eq .Values.storage.type "pvc" -}}
{{- printf "%s/data" (trimSuffix "/" .Values.storage.pvc.mountPath) -}}
{{- else -}}
{{- printf "%s/data" (trimSuffix "/" .Values.storage.objectStore.uri) -}}
{{- end -}}
{{- end -}}

{{- define "rt.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s:%d" (include "rt.mlflowName" .) (int .Values.mlflow.port) -}}
{{- else -}}
{{- .Values.mlflow.externalUri -}}
{{- end -}}
{{- end -}}

{{/* The entrypoint: the same `python -m training <overrides>` a local run takes,
     with the cluster shape derived from the worker groups. */}}
{{- define "rt.entrypoint" -}}
{{- $t := include "rt.train" . | fromJson -}}
{{- $args := list "python" "-m" "training" "cluster=address" "cluster.address=auto" -}}
{{- $args = append $args (printf "cluster.num_workers=%d" (int $t.numWorkers)) -}}
{{- $args = append $args (printf "cluster.cpus_per_worker=%v" $t.cpus) -}}
{{- $args = append $args (printf "cluster.gpus_per_worker=%d" (int $t.gpus)) -}}
{{- $args = append $args (printf "cluster.storage_path=%s" (include "rt.storagePath" .)) -}}
{{- $args = append $args "tracking=server" -}}
{{- $setsPath := false -}}
{{- $dataGroup := "synthetic" -}}
{{- range .Values.job.overrides -}}
{{- if hasPrefix "data.path=" . -}}{{- $setsPath = true -}}{{- end -}}
{{- if hasPrefix "data=" . -}}{{- $dataGroup = trimPrefix "data=" . -}}{{- end -}}
{{- end -}}
{{- $args = concat $args .Values.job.overrides -}}
{{- if and (not $setsPath) (eq $dataGroup "synthetic") -}}
{{- $args = append $args (printf "data.path=%s/synthetic/retail" (include "rt.dataBase" .)) -}}
{{- end -}}
{{- join " " $args -}}
{{- end -}}

{{/* Validation: combinations values.schema.json cannot express. Each message
     names the value and what would be accepted. */}}
{{- define "rt.validate" -}}
{{- $t := include "rt.train" . | fromJson -}}
{{- $g := index .Values.workerGroups .Values.train.workerGroup -}}
{{- if not $g -}}
{{- fail (printf "train.workerGroup=%q: no such worker group (defined: %s)" .Values.train.workerGroup (keys .Values.workerGroups | sortAlpha | join ", ")) -}}
{{- end -}}
{{- if eq (toString $g.enabled) "false" -}}
{{- fail (printf "train.workerGroup=%q: that group has enabled=false; enable it or train on another group" .Values.train.workerGroup) -}}
{{- end -}}
{{- range $name, $grp := .Values.workerGroups -}}
{{- if ne (toString $grp.enabled) "false" -}}
{{- $min := $grp.minReplicas | default 0 | int -}}
{{- $max := $grp.maxReplicas | default $grp.replicas | int -}}
{{- $rep := $grp.replicas | int -}}
{{- if gt $min $max -}}
{{- fail (printf "workerGroups.%s: minReplicas=%d > maxReplicas=%d" $name $min $max) -}}
{{- end -}}
{{- if or (lt $rep $min) (gt $rep $max) -}}
{{- fail (printf "workerGroups.%s.replicas=%d: must lie between minReplicas=%d and maxReplicas=%d" $name $rep $min $max) -}}
{{- end -}}
{{- $gpus := $grp.gpus | default 0 | int -}}
{{- if and (eq (default "cpu" $grp.type) "gpu") (lt $gpus 1) -}}
{{- fail (printf "workerGroups.%s.gpus=%d: a group of type gpu needs gpus >= 1 (the nvidia.com/gpu limit per pod)" $name $gpus) -}}
{{- end -}}
{{- if and (eq (default "cpu" $grp.type) "cpu") (gt $gpus 0) -}}
{{- fail (printf "workerGroups.%s.gpus=%d: a group of type cpu has no GPUs; set type: gpu" $name $gpus) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name, $grp := merge (dict "head" .Values.head) (omit .Values.workerGroups "head") -}}
{{- if ne (toString $grp.enabled) "false" -}}
{{- $limit := include "rt.memBytes" $grp.resources.limits.memory | int64 -}}
{{- $store := include "rt.objectStoreBytes" $grp | int64 -}}
{{- $shm := include "rt.memBytes" $.Values.storage.shmSize | int64 -}}
{{- if ge (add $store $shm) $limit -}}
{{- fail (printf "%s: the object store (%d MiB) plus storage.shmSize (%s) must stay below resources.limits.memory=%s (/dev/shm counts against it); lower objectStoreMemory or raise the limit" (ternary "head" (printf "workerGroups.%s" $name) (eq $name "head")) (div $store 1048576) $.Values.storage.shmSize (toString $grp.resources.limits.memory)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if lt (int $t.podCpus) 1 -}}
{{- fail (printf "workerGroups.%s.resources.limits.cpu=%v: a Ray Train worker needs at least 1 whole CPU per pod" $t.group $g.resources.limits.cpu) -}}
{{- end -}}
{{- if gt (float64 $t.cpus) (float64 $t.podCpus) -}}
{{- fail (printf "train.cpusPerWorker=%v exceeds the %v CPUs of one workerGroups.%s pod (resources.limits.cpu); the job would wait forever" $t.cpus $t.podCpus $t.group) -}}
{{- end -}}
{{- if lt (int $t.numWorkers) 1 -}}
{{- fail (printf "workerGroups.%s.replicas=0: the group Ray Train runs on needs at least one pod" $t.group) -}}
{{- end -}}
{{- range .Values.job.overrides -}}
{{- if or (hasPrefix "cluster=" .) (hasPrefix "cluster." .) (hasPrefix "tracking=" .) (hasPrefix "+cluster" .) -}}
{{- fail (printf "job.overrides: %q is derived by the chart (cluster.* from workerGroups and storage, tracking=server); remove it" .) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.storage.type "objectStore") (not .Values.storage.objectStore.uri) -}}
{{- fail "storage.objectStore.uri is empty: storage.type=objectStore needs an s3://, gs:// or abfss:// URI" -}}
{{- end -}}
{{- if and (not .Values.mlflow.enabled) (not .Values.mlflow.externalUri) -}}
{{- fail "mlflow.enabled=false and mlflow.externalUri is empty: the job runs with tracking=server and needs a tracking URI" -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (eq .Values.mlflow.backend.type "postgresql") (not .Values.mlflow.backend.existingSecret) -}}
{{- fail "mlflow.backend.type=postgresql needs mlflow.backend.existingSecret (a Secret holding the database URI)" -}}
{{- end -}}
{{- if and (eq .Values.auth.mode "disabled") (not .Values.auth.acknowledgeDisabled) -}}
{{- fail "auth.mode=disabled turns off Ray token authentication (anyone who reaches the dashboard can run code); set auth.acknowledgeDisabled=true to confirm" -}}
{{- end -}}
{{- if .Values.job.enabled -}}
{{- include "rt.validateJob" . -}}
{{- end -}}
{{- end -}}

{{/* Rules the KubeRay 1.7 operator enforces only after apply (status ValidationFailed). */}}
{{- define "rt.validateJob" -}}
{{- $j := .Values.job -}}
{{- $name := include "rt.jobName" . -}}
{{- $limit := ternary 42 47 (and $j.generateName (not $j.name)) -}}
{{- if gt (len $name) $limit -}}
{{- fail (printf "RayJob name %q has %d characters; KubeRay allows %d (shorten job.name, fullnameOverride or the release name)" $name (len $name) $limit) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?-?$" $name) -}}
{{- fail (printf "RayJob name %q is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter)" $name) -}}
{{- end -}}
{{- if and $j.suspend (not $j.shutdownAfterJobFinishes) -}}
{{- fail "job.suspend=true needs job.shutdownAfterJobFinishes=true (KubeRay rejects suspending a RayJob that keeps its cluster)" -}}
{{- end -}}
{{- if and (gt (int $j.ttlSecondsAfterFinished) 0) (not $j.shutdownAfterJobFinishes) -}}
{{- fail (printf "job.ttlSecondsAfterFinished=%d needs job.shutdownAfterJobFinishes=true (or set it to 0)" (int $j.ttlSecondsAfterFinished)) -}}
{{- end -}}
{{- if and $j.deletionStrategy $j.shutdownAfterJobFinishes -}}
{{- fail "job.deletionStrategy and job.shutdownAfterJobFinishes=true are mutually exclusive in KubeRay; set shutdownAfterJobFinishes=false and ttlSecondsAfterFinished=0" -}}
{{- end -}}
{{- if $j.clusterSelector -}}
{{- if gt (int $j.backoffLimit) 0 -}}
{{- fail (printf "job.backoffLimit=%d is not allowed with job.clusterSelector (KubeRay retries by recreating the cluster it owns)" (int $j.backoffLimit)) -}}
{{- end -}}
{{- if $j.suspend -}}
{{- fail "job.suspend=true is not allowed with job.clusterSelector" -}}
{{- end -}}
{{- if eq $j.submissionMode "SidecarMode" -}}
{{- fail "job.submissionMode=SidecarMode is not allowed with job.clusterSelector" -}}
{{- end -}}
{{- if not (index $j.clusterSelector "ray.io/cluster") -}}
{{- fail "job.clusterSelector needs the key ray.io/cluster (the name of the RayCluster)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $j.submissionMode "InteractiveMode") (gt (int $j.backoffLimit) 0) -}}
{{- fail (printf "job.backoffLimit=%d is not allowed with job.submissionMode=InteractiveMode" (int $j.backoffLimit)) -}}
{{- end -}}
{{- end -}}

{{/* Pods ------------------------------------------------------------------- */}}

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
{{- end -}}

{{- define "rt.rayVolumeMounts" -}}
- name: shm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
- name: work
  mountPath: /work
{{- if eq .Values.storage.type "pvc" }}
- name: shared
  mountPath: {{ .Values.storage.pvc.mountPath }}
{{- end }}
{{- end -}}

{{/* Env every Ray container and the submitter get. */}}
{{- define "rt.rayEnv" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "rt.trackingUri" . | quote }}
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

{{- define "rt.rayEnvFrom" -}}
{{- if .Values.storage.objectStore.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.storage.objectStore.credentialsSecret }}
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

{{/* Pod-level fields shared by head and workers. Args: (list $ $group) */}}
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
volumes:
  {{- include "rt.rayVolumes" (list $ $g) | nindent 2 }}
{{- end -}}

{{/* The Ray container. Args: (list $ $group "head"|"worker") */}}
{{- define "rt.rayContainer" -}}
{{- $ := index . 0 -}}
{{- $g := index . 1 -}}
{{- $role := index . 2 -}}
- name: {{ ternary "ray-head" "ray-worker" (eq $role "head") }}
  image: {{ include "rt.image" $ }}
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
  {{- with (include "rt.rayEnvFrom" $) }}
  {{- . | nindent 2 }}
  {{- end }}
  resources:
    {{- include "rt.resources" (list $g.resources ($g.gpus | default 0)) | nindent 4 }}
  securityContext:
    {{- $sc := deepCopy $.Values.containerSecurityContext }}
    {{- if $.Values.devSync.enabled }}
    {{- /* skaffold's file sync writes into the image's app directory. */}}
    {{- $_ := set $sc "readOnlyRootFilesystem" false }}
    {{- end }}
    {{- toYaml $sc | nindent 4 }}
  volumeMounts:
    {{- include "rt.rayVolumeMounts" $ | nindent 4 }}
{{- end -}}

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
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
{{- end }}
headGroupSpec:
  rayStartParams:
    {{- include "rt.rayStartParams" .Values.head | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "rt.componentLabels" (list . "ray") | nindent 8 }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
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
        labels:
          {{- include "rt.componentLabels" (list $ "ray") | nindent 10 }}
          ray-training/worker-group: {{ $name }}
        {{- with $.Values.podAnnotations }}
        annotations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      spec:
        {{- include "rt.rayPodSpec" (list $ $g "worker") | nindent 8 }}
        containers:
          {{- include "rt.rayContainer" (list $ $g "worker") | nindent 10 }}
{{- end }}
{{- end }}
{{- end -}}
