{{/* Validation at render time: value combinations values.schema.json cannot express, and
     the RayJob rules KubeRay checks only after apply. Each message names the value and
     what would be accepted. */}}

{{/* Combinations of values across sections; called once from validate.yaml. */}}
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
{{- fail (printf "%s: the object store (%d MiB) plus storage.shmSize (%s) must stay below resources.limits.memory=%s (/dev/shm counts against it); lower objectStoreMemory or raise the limit" (ternary "head" (printf "workerGroups.%s" $name) (eq $name "head")) (div $store 1048576) (toString $.Values.storage.shmSize) (ternary (toString $grp.resources.limits.memory) (printf "%d" $limit) (kindIs "string" $grp.resources.limits.memory))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "rt.validatePods" . -}}
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
{{- /* Hydra's + and ~ forms too (the schema allows no ++); tracking.experiment stays the user's. */ -}}
{{- if regexMatch "^[+~]*(cluster([.=]|$)|tracking(=|$)|tracking\\.(uri|backend|local_dir)=)" . -}}
{{- fail (printf "job.overrides: %q is derived by the chart (cluster.* from workerGroups and storage, tracking=server and its URI); remove it" .) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.storage.type "objectStore") (not .Values.storage.objectStore.uri) -}}
{{- fail "storage.objectStore.uri is empty: storage.type=objectStore needs an s3://, gs:// or abfss:// URI" -}}
{{- end -}}
{{- if and (not .Values.mlflow.enabled) (not .Values.mlflow.externalUri) -}}
{{- fail "mlflow.enabled=false and mlflow.externalUri is empty: the job runs with tracking=server and needs a tracking URI" -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (not .Values.mlflow.auth.existingSecret) (or (not .Values.mlflow.auth.createSecret) (not .Values.mlflow.enabled)) -}}
{{- fail "mlflow.auth.enabled needs mlflow.auth.existingSecret (keys username, password and, for the chart's own server, server_secret_key), or mlflow.auth.createSecret with the chart's own MLflow server (mlflow.enabled)" -}}
{{- end -}}
{{- if and .Values.mlflow.enabled (eq .Values.mlflow.backend.type "postgresql") (not .Values.mlflow.backend.existingSecret) -}}
{{- fail "mlflow.backend.type=postgresql needs mlflow.backend.existingSecret (a Secret holding the database URI)" -}}
{{- end -}}
{{- if and .Values.serving.enabled (not .Values.serving.model) -}}
{{- fail "serving.enabled needs serving.model: the registered model to serve (e.g. retail-demand-ensemble, the workload's registered_model_name)" -}}
{{- end -}}
{{- if and .Values.serving.enabled (not .Values.serving.alias) (not .Values.serving.version) -}}
{{- fail "serving.alias and serving.version are both empty: name the alias (e.g. champion) or the version number to serve" -}}
{{- end -}}
{{- if and (eq .Values.auth.mode "disabled") (not .Values.auth.acknowledgeDisabled) -}}
{{- fail "auth.mode=disabled turns off Ray token authentication (anyone who reaches the dashboard can run code); set auth.acknowledgeDisabled=true to confirm" -}}
{{- end -}}
{{- /* KubeRay's RayCronJob controller copies jobTemplate (a RayJob spec) into each RayJob it
     creates, with its own labels only: suspend would be copied, the Kueue queue label not. */ -}}
{{- if and .Values.schedule.enabled (eq .Values.schedule.kind "RayCronJob") .Values.job.suspend -}}
{{- fail "job.suspend=true with schedule.kind=RayCronJob: KubeRay creates each scheduled RayJob suspended but without job.labels (no kueue.x-k8s.io/queue-name), so Kueue never admits it; use schedule.kind=CronJob, whose RayJobs carry job.labels" -}}
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
{{- /* The launcher (job.namedByLauncher) names the RayJob when it creates it and adds run_name then. */ -}}
{{- if and (gt (int $j.backoffLimit) 0) $j.generateName (not $j.name) (not (include "rt.setsRunName" .)) (not $j.namedByLauncher) -}}
{{- fail (printf "job.backoffLimit=%d with job.generateName: a retry could not resume its run (the RayJob's name, which the run takes, is not known when the chart renders); use job.name or job.naming" (int $j.backoffLimit)) -}}
{{- end -}}
{{- if and (eq $j.submissionMode "InteractiveMode") (gt (int $j.backoffLimit) 0) -}}
{{- fail (printf "job.backoffLimit=%d is not allowed with job.submissionMode=InteractiveMode" (int $j.backoffLimit)) -}}
{{- end -}}
{{- end -}}

{{/* The per-group pod fields: mounts name a volume the pod has, labels do not repeat
     commonLabels, and an unschedulable head sets no CPUs or GPUs of its own. The Ray Train
     shape (rt.train) counts only the train group's pods, so a head without CPUs changes nothing
     there; the job's driver and Tune's trial drivers ask Ray for no CPUs. */}}
{{- define "rt.validatePods" -}}
{{- range $name, $grp := merge (dict "head" .Values.head) (omit .Values.workerGroups "head") -}}
{{- if ne (toString $grp.enabled) "false" -}}
{{- $where := ternary "head" (printf "workerGroups.%s" $name) (eq $name "head") -}}
{{- $volumes := list "shm" "tmp" "work" -}}
{{- if eq $.Values.storage.type "pvc" -}}{{- $volumes = append $volumes "shared" -}}{{- end -}}
{{- range $i, $v := $grp.volumes -}}
{{- if has $v.name $volumes -}}
{{- fail (printf "%s.volumes[%d].name=%q: the pod already has a volume of that name (the chart's: shm, tmp, work, shared)" $where $i $v.name) -}}
{{- end -}}
{{- $volumes = append $volumes $v.name -}}
{{- end -}}
{{- range $i, $m := $grp.volumeMounts -}}
{{- if not (has $m.name $volumes) -}}
{{- fail (printf "%s.volumeMounts[%d].name=%q: no such volume in the pod (%s)" $where $i $m.name (join ", " $volumes)) -}}
{{- end -}}
{{- end -}}
{{- range $c := $grp.initContainers -}}
{{- if has $c.name (list "ray-head" "ray-worker") -}}
{{- fail (printf "%s.initContainers: the name %q is the Ray container's" $where $c.name) -}}
{{- end -}}
{{- range $i, $m := $c.volumeMounts -}}
{{- if not (has $m.name $volumes) -}}
{{- fail (printf "%s.initContainers[%s].volumeMounts[%d].name=%q: no such volume in the pod (%s)" $where $c.name $i $m.name (join ", " $volumes)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key, $_ := $grp.labels -}}
{{- if regexMatch "^(app\\.kubernetes\\.io|helm\\.sh|ray\\.io|ray-training)/" $key -}}
{{- fail (printf "%s.labels.%s: keys under app.kubernetes.io/, helm.sh/, ray.io/ and ray-training/ are set by the chart or KubeRay" $where $key) -}}
{{- end -}}
{{- if hasKey $.Values.commonLabels $key -}}
{{- fail (printf "%s.labels.%s: also set in commonLabels; set it in one place" $where $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq (toString .Values.head.schedulable) "false" -}}
{{- range $k := list "num-cpus" "num-gpus" -}}
{{- with index ($.Values.head.rayStartParams | default dict) $k -}}
{{- if ne (toString .) "0" -}}
{{- fail (printf "head.rayStartParams.%s=%q contradicts head.schedulable=false (which sets it to \"0\"); drop one of them" $k (toString .)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
