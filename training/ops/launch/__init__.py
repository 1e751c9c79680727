"""`python -m training.ops.launch [options] [OVERRIDES...]`: run a workload as a KubeRay RayJob and follow it.

The RayJob comes from the chart (charts/ray-training, rendered with the same Hydra overrides a
local run takes) or from a manifest the chart rendered earlier (`--manifest`, what the scheduled
retraining CronJob uses). Each launch gets its own run id and RayJob name; the launcher creates
it through the Kubernetes API, follows jobDeploymentStatus/jobStatus (re-watching when a watch
drops) and the submitter's log, and exits 0 on success or non-zero with KubeRay's reason.

naming: run ids and RayJob names; render: the RayJob from the chart or a manifest; outcome: a
RayJob's result and the exit codes; kube: create, delete, prune; follow: status and logs;
cli: the command.
"""
