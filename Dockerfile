# The training image: the official Ray image of the pinned Ray version plus this
# package with its pinned dependencies. Ray head, workers, the RayJob submitter,
# the MLflow server and `helm test` all run it.
#   CPU: docker build -t ray-training:0.1.0 .
#   GPU: docker build --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#          --build-arg EXTRAS=bert -t ray-training:0.1.0-gpu .
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311
FROM ${BASE_IMAGE}

# Optional extras of pyproject.toml (e.g. "bert" for torch + transformers).
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /home/ray/app

# Dependencies first, in a layer that only pyproject.toml invalidates: the package is installed
# once as an empty stub (empty README.md too), which pulls every pinned dependency; a change to
# training/ (its config tree, training/conf/, included) or README.md rebuilds only the small layers below.
# psycopg2 lets the MLflow server use a PostgreSQL backend store (chart: mlflow.backend.type),
# Flask-WTF run its basic-auth app (chart: mlflow.auth.enabled; what mlflow[auth] adds), boto3
# and google-cloud-storage its s3:// and gs:// artifact stores (chart: mlflow.artifacts.destination):
# named here, so the server does not depend on what the base image happens to carry.
# DL3013: "." is this project; every dependency is pinned with == in pyproject.toml.
COPY --chown=1000:100 pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir training && touch training/__init__.py README.md \
    && pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" "psycopg2-binary==2.9.11" "Flask-WTF==1.2.2" \
        "boto3==1.44.18" "google-cloud-storage==3.17.2" \
    && rm -rf training README.md build ./*.egg-info

# The code: the package itself, without touching its dependencies.
COPY --chown=1000:100 README.md ./
COPY --chown=1000:100 training/ training/
# The bytecode of the source tree the pods import (PYTHONPATH below; .dockerignore keeps the
# host's out): they run with a read-only root filesystem, where no process could write it, so
# without it every process would compile training/ again on each start. Timestamp-checked .pyc
# (compileall's default): a file skaffold syncs over its source is compiled afresh, not used stale.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info \
    && python -m compileall -q training

# The source tree wins over the installed copy: `skaffold dev -p dev` syncs edited files of
# training/ (configs included) straight into this directory.
ENV PYTHONPATH=/home/ray/app
# Ray workers give back the memory they freed (an idle preprocessing worker would otherwise keep
# gigabytes while the model trains): Arrow on the system allocator, large arrays always mmapped.
# The same values as training/runtime/memory.py's WORKER_MEMORY_ENV for an in-process Ray; the
# work itself (training, each preprocessing task) switches to reusing memory while it runs.
ENV ARROW_DEFAULT_MEMORY_POOL=system \
    MALLOC_MMAP_THRESHOLD_=65536

# The base image's non-root `ray` user (uid 1000, gid 100); the chart runs as the same ids.
USER 1000:100

# Local use: `docker run ray-training:0.1.0 workload=xgboost`. KubeRay replaces the
# command with `ray start` / `ray job submit`; the MLflow Deployment runs `mlflow server`.
ENTRYPOINT ["python", "-m", "training"]
