{{/* Quantity arithmetic: Kubernetes CPU and memory quantities to numbers, the object
     store each pod gets, and the Ray Train shape derived from the worker group it runs on. */}}

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
{{- if kindIs "string" . -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $num := regexFind "^[0-9.]+" . -}}
{{- $unit := trimPrefix $num . -}}
{{- mulf (float64 $num) (index $units $unit | default 1) | int64 -}}
{{- else -}}
{{- /* A plain number is bytes. Helm reads YAML numbers as float64, and toString writes a large
     one in exponent form ("1.7179869184e+10"), which the suffix parsing above would misread. */ -}}
{{- printf "%.0f" (float64 .) -}}
{{- end -}}
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

{{/* rayStartParams with object-store-memory filled in, and no CPUs or GPUs for Ray on a
     head with schedulable=false. Args: group values */}}
{{- define "rt.rayStartParams" -}}
{{- $p := deepCopy (.rayStartParams | default dict) -}}
{{- $_ := set $p "object-store-memory" (include "rt.objectStoreBytes" . | toString) -}}
{{- if eq (toString .schedulable) "false" -}}
{{- $_ := set $p "num-cpus" "0" -}}
{{- $_ := set $p "num-gpus" "0" -}}
{{- end -}}
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
