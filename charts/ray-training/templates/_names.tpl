{{/* Names and labels: the release's resource names, the labels every object carries
     (selectorLabels inside labels), and the names of the image, Secret, PVC and RayJob. */}}

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

{{/* The Ray pods' image (head, workers, their init containers) and the model server's, which
     loads what they trained and so needs the same libraries. rayImage all empty: `image`;
     otherwise rayImage's repository and tag where set, `image`'s where not (a digest only from
     rayImage: `image`'s names another image). The rest of the release (MLflow, the submitter,
     the launcher, `helm test`) runs `image`, so the GPU preset keeps them on the CPU image. */}}
{{- define "rt.rayImage" -}}
{{- $r := .Values.rayImage -}}
{{- if not (or $r.repository $r.tag $r.digest) -}}
{{- include "rt.image" . -}}
{{- else if $r.digest -}}
{{- printf "%s@%s" (default .Values.image.repository $r.repository) $r.digest -}}
{{- else -}}
{{- printf "%s:%s" (default .Values.image.repository $r.repository) (default (default .Chart.AppVersion .Values.image.tag) $r.tag) -}}
{{- end -}}
{{- end -}}

{{- define "rt.mlflowImage" -}}
{{- if .Values.mlflow.image.repository -}}
{{- printf "%s:%s" .Values.mlflow.image.repository (default .Chart.AppVersion .Values.mlflow.image.tag) -}}
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

{{- define "rt.mlflowAuthSecretName" -}}
{{- default (printf "%s-mlflow-auth" (include "rt.fullname" .)) .Values.mlflow.auth.existingSecret -}}
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
     RayJob spec, so a merged change to it is a new run, not an ignored edit. The labels
     carrying the chart's version and appVersion are left out of the hash: a chart release
     that changes nothing else is not a new run (a new default image tag still is). */ -}}
{{- $spec := regexReplaceAll "(?m)^[ \\t]*(helm\\.sh/chart|app\\.kubernetes\\.io/version):.*\\n" (include "rt.rayJobSpec" .) "" -}}
{{- printf "%s-%s" (include "rt.fullname" . | trunc 38 | trimSuffix "-") ($spec | sha256sum | trunc 8) -}}
{{- else -}}
{{- printf "%s-r%d" (include "rt.fullname" .) (int .Release.Revision) -}}
{{- end -}}
{{- end -}}

{{- define "rt.servingName" -}}
{{- printf "%s-serving" (include "rt.fullname" .) -}}
{{- end -}}

{{/* What the model server loads: models:/<model>@<alias>, or models:/<model>/<version>. */}}
{{- define "rt.servingModelUri" -}}
{{- if .Values.serving.alias -}}
{{- printf "models:/%s@%s" .Values.serving.model .Values.serving.alias -}}
{{- else -}}
{{- printf "models:/%s/%v" .Values.serving.model .Values.serving.version -}}
{{- end -}}
{{- end -}}

{{/* Annotations of the objects that outlive the release (data, the model registry, credentials
     running pods hold): Helm keeps them on uninstall and when they leave the render. Argo CD
     ignores Helm's annotation; its own: Delete=false when the Application is deleted,
     Prune=false when the object leaves the render. */}}
{{- define "rt.keepAnnotations" -}}
helm.sh/resource-policy: keep
argocd.argoproj.io/sync-options: Prune=false,Delete=false
{{- end -}}
