{{/* The job's entrypoint and the locations it passes on: storage path, data base path,
     MLflow tracking URI. */}}

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
     with the cluster shape derived from the worker groups; with `RunName` in the context
     (rayjob.yaml, when KubeRay retries the job), the run's name. */}}
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
{{- with .RunName -}}
{{- $args = append $args (printf "run_name=%s" .) -}}
{{- end -}}
{{- join " " $args -}}
{{- end -}}

{{/* "true" when job.overrides names the run itself (run_name= or +run_name=). */}}
{{- define "rt.setsRunName" -}}
{{- range .Values.job.overrides -}}
{{- if regexMatch "^\\+?run_name=" . -}}true{{- end -}}
{{- end -}}
{{- end -}}
