"""What the chart promises the training package and the cluster: one source of
truth for the Ray Train shape, token auth everywhere, hardened pods, storage, MLflow."""

from __future__ import annotations

import shlex

import pytest
import yaml

import k8s_support as k


def entrypoint_args(objs) -> dict[str, str]:
    argv = shlex.split(k.one(objs, "RayJob")["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "training"]
    return dict(a.split("=", 1) for a in argv[3:])


def group(objs, name):
    spec = k.one(objs, "RayJob")["spec"]["rayClusterSpec"]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def test_entrypoint_is_the_local_command_plus_cluster_overrides():
    objs = k.render_objects({"job": {"overrides": ["workload=ensemble", "data=parquet", "data.path=/mnt/data/x",
                                                   "data.target=y"]}})
    args = entrypoint_args(objs)
    assert args == {
        "cluster": "address", "cluster.address": "auto", "cluster.num_workers": "2",
        "cluster.cpus_per_worker": "4", "cluster.gpus_per_worker": "0",
        "cluster.storage_path": "/mnt/shared/ray_results", "tracking": "server",
        "workload": "ensemble", "data": "parquet", "data.path": "/mnt/data/x", "data.target": "y",
    }


@pytest.mark.parametrize("values, expect", [
    ({"workerGroups": {"cpu": {"replicas": 3, "maxReplicas": 5}}}, ("cpu", 3, "4", 0)),
    ({"workerGroups": {"cpu": {"resources": {"requests": {"cpu": "6"}, "limits": {"cpu": "6500m"}}}}},
     ("cpu", 2, "6", 0)),
    ({"train": {"cpusPerWorker": 2}}, ("cpu", 2, "2", 0)),
    ({"train": {"workerGroup": "gpu"}, "workerGroups": {"gpu": {"enabled": True, "gpus": 4, "replicas": 2}}},
     ("gpu", 2, "8", 4)),
])
def test_train_shape_comes_from_the_worker_group(values, expect):
    """num_workers = replicas, cpus = train.cpusPerWorker or the pod's whole CPUs, gpus = nvidia.com/gpu."""
    gname, n, cpus, gpus = expect
    objs = k.render_objects(values)
    args = entrypoint_args(objs)
    g = group(objs, gname)
    limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(args["cluster.num_workers"]) == g["replicas"] == n
    assert args["cluster.cpus_per_worker"] == cpus
    assert float(cpus) <= k.parse_quantity(limits["cpu"])
    assert int(args["cluster.gpus_per_worker"]) == int(limits.get("nvidia.com/gpu", 0)) == gpus


def test_presets_ask_only_for_what_their_pods_provide(scenario_renders):
    for name, objs in scenario_renders.items():
        jobs = k.by_kind(objs, "RayJob")
        if not jobs or "rayClusterSpec" not in jobs[0]["spec"]:
            continue
        args = entrypoint_args(objs)
        fits = [g for g in jobs[0]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
                if k.parse_quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                >= float(args["cluster.cpus_per_worker"])
                and int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
                >= int(args["cluster.gpus_per_worker"])]
        assert sum(g["maxReplicas"] for g in fits) >= int(args["cluster.num_workers"]), name


def test_synthetic_data_goes_to_shared_storage():
    assert entrypoint_args(k.render_objects({}))["data.path"] == "/mnt/shared/data/synthetic/retail"
    s3 = {"storage": {"type": "objectStore", "objectStore": {"uri": "s3://b/p/"}}}
    args = entrypoint_args(k.render_objects(s3))
    assert args["data.path"] == "s3://b/p/data/synthetic/retail"
    assert args["cluster.storage_path"] == "s3://b/p/ray_results"
    assert "data.path" not in entrypoint_args(k.render_objects({"job": {"overrides": ["data=csv"]}}))


def test_gpu_group_gets_gpu_limits_and_tolerations():
    objs = k.render_objects({"workerGroups": {"gpu": {"enabled": True, "gpus": 2}}})
    pod = group(objs, "gpu")["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 2 and res["requests"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nvidia.com/gpu" not in group(objs, "cpu")["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_extra_group_passes_pod_fields_through():
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "autoscaling-gpu-values.yaml"))
    g = group(objs, "highmem")
    assert g["rayStartParams"] == {"resources": '"{\\"highmem\\": 1}"',
                                   "object-store-memory": str(int(0.3 * k.parse_quantity(
                                       g["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])))}
    assert g["template"]["spec"]["affinity"]["nodeAffinity"]
    assert {"name": "OMP_NUM_THREADS", "value": "8"} in g["template"]["spec"]["containers"][0]["env"]
    spec = k.one(objs, "RayJob")["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert group(objs, "gpu")["idleTimeoutSeconds"] == 300


@pytest.mark.parametrize("values, secret", [
    ({}, "demo-ray-training-ray-auth"),
    ({"auth": {"existingSecret": "mine"}}, "mine"),
    ({"auth": {"createSecret": False}}, None),
])
def test_token_auth_reaches_head_workers_and_submitter(values, secret):
    """KubeRay's authOptions injects RAY_AUTH_MODE/RAY_AUTH_TOKEN into every Ray
    container and the submitter; the chart must not override them."""
    objs = k.render_objects(values)
    for kind in ("RayJob",):
        cs = k.one(objs, kind)["spec"]["rayClusterSpec"]
        assert cs["authOptions"]["mode"] == "token"
        assert cs["authOptions"].get("secretName") == secret
        assert cs["rayVersion"] == "2.60.0"
    secrets = k.by_kind(objs, "Secret")
    if secret == "demo-ray-training-ray-auth":
        assert len(secrets) == 1 and "auth_token" in secrets[0]["data"]
    else:
        assert not secrets
    for o in objs:
        for where, pod in k.pod_specs(o):
            for c in k.containers(pod):
                names = [e["name"] for e in c.get("env", [])]
                assert "RAY_AUTH_MODE" not in names and "RAY_AUTH_TOKEN" not in names, (where, c["name"])


def test_auth_disabled_is_explicit_everywhere():
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "auth-disabled-values.yaml"))
    job = k.one(objs, "RayJob")
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "disabled"}
    for where, pod in k.pod_specs(job):
        for c in pod["containers"]:
            assert {"name": "RAY_AUTH_MODE", "value": "disabled"} in c["env"], where


def test_every_container_is_hardened_with_requests_and_limits(scenario_renders):
    for name, objs in scenario_renders.items():
        for o in objs:
            for where, pod in k.pod_specs(o):
                psc = pod["securityContext"]
                assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert pod.get("automountServiceAccountToken") is not True or \
                    (o["kind"] in ("RayJob", "RayCluster") and "headGroupSpec" in where), where
                for c in k.containers(pod):
                    sc = c["securityContext"]
                    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
                    assert sc.get("privileged") is False and sc["runAsNonRoot"] is True
                    dev = o["metadata"].get("annotations", {}).get("checkov.io/skip1", "")
                    assert sc["readOnlyRootFilesystem"] is True or "devSync" in dev, (name, where, c["name"])
                    for section in ("requests", "limits"):
                        assert {"cpu", "memory"} <= set(c["resources"][section]), (name, where, c["name"])


def test_ray_pods_get_scratch_shm_and_shared_storage():
    objs = k.render_objects({"storage": {"shmSize": "4Gi"}})
    for where, pod in k.pod_specs(k.one(objs, "RayJob")):
        if "submitter" in where:
            continue
        vols = {v["name"]: v for v in pod["volumes"]}
        # Ray's object store (its rayStartParams) plus storage.shmSize: test_k8s_resources.py.
        assert vols["shm"]["emptyDir"]["medium"] == "Memory"
        assert k.parse_quantity(vols["shm"]["emptyDir"]["sizeLimit"]) >= 4 * 2**30
        assert "emptyDir" in vols["tmp"] and vols["shared"]["persistentVolumeClaim"]["claimName"] == "demo-ray-training-shared"
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/dev/shm", "/tmp", "/work", "/mnt/shared"} <= mounts
        assert pod["containers"][0]["workingDir"] == "/work"
    pvc = next(p for p in k.by_kind(objs, "PersistentVolumeClaim") if p["metadata"]["name"].endswith("-shared"))
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_object_store_credentials_come_from_a_secret():
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "objectstore-postgres-values.yaml"))
    job = k.one(objs, "RayJob")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "shared" not in {v["name"] for v in head["volumes"]}
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"env_vars": {"OMP_NUM_THREADS": "4"}}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    mlflow = k.one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    uri = next(e for e in mlflow["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert uri["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    assert "--artifacts-destination=s3://ml-bucket/mlflow" in mlflow["args"]


def test_mlflow_server_and_tracking_uri_agree():
    objs = k.render_objects({})
    svc = next(s for s in k.by_kind(objs, "Service") if s["metadata"]["name"] == "demo-ray-training-mlflow")
    deploy = k.one(objs, "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    job = k.one(objs, "RayJob")
    for where, pod in k.pod_specs(job):
        if "submitter" in where:
            continue
        uri = next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == "MLFLOW_TRACKING_URI")
        assert uri == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
        assert uri.removeprefix("http://") in hosts  # the Host header the client sends
    assert "localhost:*" in hosts  # kubectl port-forward
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in c["args"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == "sqlite:////mlflow/mlflow.db"
    assert deploy["spec"]["strategy"]["type"] == "Recreate"


def test_mlflow_with_an_s3_compatible_store_is_told_its_endpoint_and_scratch_size():
    """MLflow's S3 client goes to AWS unless MLFLOW_S3_ENDPOINT_URL names the store (MinIO), and
    every transfer passes through its /tmp whole: both are values."""
    objs = k.render_objects({"mlflow": {"artifacts": {"destination": "s3://bucket/mlflow", "credentialsSecret": "s3",
                                                      "endpointUrl": "http://minio.minio:9000"},
                                        "tmpSize": "8Gi"}})
    pod = k.one(objs, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert next(v for v in pod["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"] == "8Gi"
    default = k.one(k.render_objects({}), "Deployment")["spec"]["template"]["spec"]
    assert "MLFLOW_S3_ENDPOINT_URL" not in {e["name"] for e in default["containers"][0]["env"]}


def test_network_policies_admit_release_pods_and_the_operator():
    """Ray pods reach each other on any port; the submitter and the operator reach the dashboard.
    (The default-deny layout itself: test_k8s_networkpolicy.py.)"""
    objs = k.render_objects({})
    ray = next(p for p in k.by_kind(objs, "NetworkPolicy") if p["metadata"]["name"].endswith("-ray"))
    among, code = ray["spec"]["ingress"]
    release = {"app.kubernetes.io/name": "ray-training", "app.kubernetes.io/instance": "demo"}
    assert among["from"][0]["podSelector"]["matchLabels"] == {**release, "app.kubernetes.io/component": "ray"}
    assert code["from"][0]["podSelector"]["matchLabels"] == release
    assert code["from"][1]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert {p["port"] for p in code["ports"]} == {8265, 10001}
    job = k.one(objs, "RayJob")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    submitter = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert all(head.get(key) == v for key, v in among["from"][0]["podSelector"]["matchLabels"].items())
    assert all(submitter.get(key) == v for key, v in code["from"][0]["podSelector"]["matchLabels"].items())
    assert submitter["app.kubernetes.io/component"] in code["from"][0]["podSelector"]["matchExpressions"][0]["values"]


def test_rbac_is_namespaced_and_minimal():
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "objectstore-postgres-values.yaml"))
    role = k.one(objs, "Role")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert verbs <= {"get", "list", "watch", "create", "delete", "patch"}
    # Writes only to RayJobs (patch: InteractiveMode's jobId), and port-forwards.
    writes = {res for r in role["rules"] for res in r["resources"] if set(r["verbs"]) & {"create", "delete", "patch"}}
    assert writes == {"rayjobs", "pods/portforward"}
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ray-token"], "verbs": ["get"]}]
    assert k.one(objs, "RoleBinding")["subjects"][0]["name"] == "ci-runner"
    assert not k.by_kind(objs, "ClusterRole")
    assert k.one(objs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_raycluster_and_rayjob_share_one_cluster_spec():
    objs = k.render_objects({"rayCluster": {"enabled": True}})
    assert k.one(objs, "RayCluster")["spec"] == k.one(objs, "RayJob")["spec"]["rayClusterSpec"]


def test_cluster_selector_job_targets_the_release_cluster():
    objs = k.render_objects(k.load_values(k.CI_VALUES_DIR / "cluster-selector-values.yaml"))
    job, cluster = k.one(objs, "RayJob"), k.one(objs, "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job["spec"]


def test_each_helm_revision_is_a_new_rayjob():
    names = {k.one(k.render_objects({}, revision=r), "RayJob")["metadata"]["name"] for r in (1, 2)}
    assert names == {"demo-ray-training-r1", "demo-ray-training-r2"}


def test_an_upgrade_that_keeps_the_rayjob_name_leaves_the_run_alone():
    """docs/kubernetes.md: an upgrade that adds serving or monitoring is a new RayJob (and Helm
    deletes the old one), unless it keeps the name with job.name: then the RayJob renders exactly
    as the running one, and Helm changes nothing. configHash names keep it by themselves."""
    extras = {"serving": {"enabled": True, "model": "m"}, "monitoring": {"podMonitor": {"enabled": True}}}
    running = k.one(k.render_objects({}), "RayJob")
    assert k.one(k.render_objects(extras, revision=2), "RayJob")["metadata"]["name"] != running["metadata"]["name"]
    kept = k.one(k.render_objects({**extras, "job": {"name": running["metadata"]["name"]}}, revision=2), "RayJob")
    assert kept == running
    by_hash = [k.one(k.render_objects({**extra, "job": {"naming": "configHash"}}, revision=rev), "RayJob")
               for extra, rev in (({}, 1), (extras, 2))]
    assert by_hash[0] == by_hash[1]


def test_with_retries_the_run_is_named_after_the_rayjob_so_a_retry_resumes():
    """KubeRay retries a RayJob on a new cluster with the same entrypoint: named after the RayJob
    (as the launcher names its runs), the retry resumes the run's checkpoints. Without retries a
    run keeps its own fresh name, so applying the same manifest again trains afresh."""
    assert "run_name" not in entrypoint_args(k.render_objects({}))
    for values, name in [({"job": {"backoffLimit": 2}}, "demo-ray-training-r1"),
                         ({"job": {"backoffLimit": 1, "name": "nightly"}}, "nightly")]:
        objs = k.render_objects(values)
        assert k.one(objs, "RayJob")["metadata"]["name"] == name
        assert entrypoint_args(objs)["run_name"] == name
    # Named after its spec (GitOps): the name hashes the spec without the run name, which then follows it.
    objs = k.render_objects({"job": {"backoffLimit": 2, "naming": "configHash"}})
    assert entrypoint_args(objs)["run_name"] == k.one(objs, "RayJob")["metadata"]["name"]
    # The user's own run_name stands; the scheduled runs' template names none (the launcher does).
    objs = k.render_objects({"job": {"backoffLimit": 2, "overrides": ["workload=xgboost", "run_name=mine"]}})
    assert entrypoint_args(objs)["run_name"] == "mine"
    objs = k.render_objects({"job": {"backoffLimit": 2}, "schedule": {"enabled": True}})
    assert "run_name=" not in yaml.safe_load(k.one(objs, "ConfigMap")["data"]["rayjob.yaml"])["spec"]["entrypoint"]
    objs = k.render_objects({"job": {"backoffLimit": 2}, "schedule": {"enabled": True, "kind": "RayCronJob"}})
    assert "run_name=" not in k.one(objs, "RayCronJob")["spec"]["jobTemplate"]["entrypoint"]
