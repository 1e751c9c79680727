"""MLflow's basic-auth app in the chart (`mlflow.auth.enabled`): the server runs the auth app with
its admin user from a Secret, and every pod that writes to MLflow authenticates from that Secret.
The server itself, with these settings, refuses an unauthenticated write in
tests/containers/test_rayjob_containers.py."""

import base64

import pytest

import k8s_support as k

AUTH = {"mlflow": {"auth": {"enabled": True}}}


def _mlflow_container(objs):
    dep = next(d for d in k.by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-mlflow"))
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def _secret_refs(container) -> dict:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "valueFrom" in e
            and "secretKeyRef" in e["valueFrom"]}


def test_off_by_default_and_nothing_asks_for_credentials():
    objs = k.render_objects()
    _, server = _mlflow_container(objs)
    assert "--app-name=basic-auth" not in server["args"]
    for _, pod in (p for o in objs for p in k.pod_specs(o)):
        for c in k.containers(pod):
            assert "MLFLOW_TRACKING_PASSWORD" not in _secret_refs(c)


def test_server_runs_the_auth_app_with_its_admin_from_the_secret():
    objs = k.render_objects(AUTH)
    dep, server = _mlflow_container(objs)
    assert "--app-name=basic-auth" in server["args"]
    refs = _secret_refs(server)
    secret = k.one([s for s in k.by_kind(objs, "Secret") if s["metadata"]["name"].endswith("-mlflow-auth")], "Secret")
    name = secret["metadata"]["name"]
    assert refs["MLFLOW_AUTH_ADMIN_USERNAME"] == {"name": name, "key": "username"}
    assert refs["MLFLOW_AUTH_ADMIN_PASSWORD"] == {"name": name, "key": "password"}
    assert base64.b64decode(secret["data"]["username"]) == b"admin"
    assert len(base64.b64decode(secret["data"]["password"])) == 32
    assert refs["MLFLOW_FLASK_SERVER_SECRET_KEY"] == {"name": name, "key": "server_secret_key"}
    assert len(base64.b64decode(secret["data"]["server_secret_key"])) == 48
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The auth config comes from a ConfigMap; users live on the MLflow volume, not the read-only root.
    env = {e["name"]: e.get("value") for e in server["env"]}
    ini = next(c for c in k.by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-mlflow-auth"))
    assert "database_uri = sqlite:////mlflow/basic_auth.db" in ini["data"]["basic_auth.ini"]
    assert "auth_cache_ttl_seconds = 60" in ini["data"]["basic_auth.ini"]  # not a slow hash per request
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow-auth/basic_auth.ini"
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/etc/mlflow-auth"]["readOnly"] and "/mlflow" in mounts


def test_every_pod_that_writes_to_mlflow_authenticates_from_the_same_secret():
    objs = k.render_objects(AUTH)
    name = next(s["metadata"]["name"] for s in k.by_kind(objs, "Secret") if s["metadata"]["name"].endswith("-mlflow-auth"))
    writers = 0
    for obj in objs:
        for where, pod in k.pod_specs(obj):
            for c in k.containers(pod):
                if any(e["name"] == "MLFLOW_TRACKING_URI" for e in c.get("env", [])):
                    writers += 1
                    refs = _secret_refs(c)
                    assert refs.get("MLFLOW_TRACKING_USERNAME") == {"name": name, "key": "username"}, (where, c["name"])
                    assert refs.get("MLFLOW_TRACKING_PASSWORD") == {"name": name, "key": "password"}, (where, c["name"])
    assert writers >= 2  # the head (where the job's driver runs) and every worker group


def test_an_external_server_takes_the_users_own_secret():
    objs = k.render_objects({"mlflow": {"enabled": False, "externalUri": "https://mlflow.example.com",
                                        "auth": {"enabled": True, "existingSecret": "team-mlflow"}}})
    assert not [s for s in k.by_kind(objs, "Secret") if s["metadata"]["name"].endswith("-mlflow-auth")]
    refs = [_secret_refs(c) for o in objs for _, p in k.pod_specs(o) for c in k.containers(p)
            if "MLFLOW_TRACKING_PASSWORD" in _secret_refs(c)]
    assert refs and all(r["MLFLOW_TRACKING_PASSWORD"]["name"] == "team-mlflow" for r in refs)


def test_an_existing_secret_for_the_charts_server_needs_three_keys():
    """username and password (the admin user, and every writer), server_secret_key (the server's
    CSRF signing key): the server's pod does not start without each key it references."""
    objs = k.render_objects({"mlflow": {"auth": {"enabled": True, "existingSecret": "team-mlflow"}}})
    assert not [s for s in k.by_kind(objs, "Secret") if s["metadata"]["name"].endswith("-mlflow-auth")]
    _, server = _mlflow_container(objs)
    refs = _secret_refs(server)
    assert {(r["name"], r["key"]) for r in refs.values()} == {
        ("team-mlflow", "username"), ("team-mlflow", "password"), ("team-mlflow", "server_secret_key")}


def test_without_a_secret_the_message_names_every_key():
    import helm_python

    with pytest.raises(helm_python.HelmRenderError) as err:
        k.render({"mlflow": {"auth": {"enabled": True, "createSecret": False}}})
    assert ("mlflow.auth.enabled needs mlflow.auth.existingSecret (keys username, password and, for the "
            "chart's own server, server_secret_key)") in str(err.value)
