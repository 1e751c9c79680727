"""The bad-input catalogue: every case is a user mistake that must end in one exact `error:` line,
a non-zero exit, and nothing registered, tracked or checkpointed.

- CONFIG, CLI and DATA cases run the real CLI entry point (`training.__main__.main`) in this
  process: the same code `python -m training` runs, minus ~5 s of interpreter start per case.
  They fail before Ray starts, so no MLflow run exists either.
- RESOURCE cases start Ray to learn its capacity, so they run `python -m training` in a fresh
  process (`run_cli`): main() shuts Ray down on exit, which would stop this session's Ray.
- CHART cases: the real Helm engine refuses bad values with one precise message. More chart
  cases (schema types, KubeRay rules): tests/k8s/test_k8s_negative.py, test_k8s_resources.py.

After every CLI case: no model version in the registry, no MLflow run in any experiment, and
nothing under cluster.storage_path (ray_results/), where checkpoints would go.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, load_config, registered_versions, run_cli
from training.__main__ import main
from training.errors import EXIT_USER_ERROR

CLUSTER_2CPU = ["cluster.num_cpus=2", "data.synthetic.rows=1000"]

# id -> (arguments, the exact error line; {d} is the bad-data directory)
CONFIG = {
    "config/unknown key": (["data.colour=red"],
        "error: bad config: Could not override 'data.colour'.; Key 'colour' not in 'DataConfig'; full_key: data.colour"),
    "config/appended unknown top-level key": (["+colour=red"],
        re.compile(r"error: bad config: unknown key 'colour' \(known: cluster, data, (\w+, )*workload\)")),
    "config/unknown workload option": (["workload=catboost"],
        "error: bad config: In 'config': Could not find 'workload/catboost'; "
        "Available options in 'workload': bert; ensemble; lightgbm; tune; xgboost"),
    "config/wrong type": (["cluster.num_workers=two"],
        "error: bad config: Error merging override cluster.num_workers=two; Value 'two' of type 'str' could not "
        "be converted to Integer; full_key: cluster.num_workers"),
    "config/a member named as the ensemble": (["workload=ensemble", "workload.members.1.name=ensemble"],
        "error: workload.members.1.name 'ensemble' must be letters, digits, '_', '.' or '-', and not 'ensemble' (the "
        "combined model's metrics are named so)"),
    "config/a member name with a slash": (["workload.members.0.name=xgb/deep"],
        "error: workload.members.0.name 'xgb/deep' must be letters, digits, '_', '.' or '-', and not 'ensemble' (the "
        "combined model's metrics are named so)"),
    "config/unknown member kind": (["workload.members.0.kind=catboost"],
        "error: workload.members.0.kind must be one of lightgbm, xgboost, got 'catboost'"),
    "config/xgboost parameter the library rejects": (["workload.members.0.params.max_depth=-1"],
        "error: workload.members.0.params (member 'xgb_deep', xgboost) rejected by xgboost: value -1 for "
        "Parameter max_depth should be greater equal to 0"),
    "config/lightgbm parameter the library rejects": (["workload=lightgbm", "workload.members.0.params.num_leaves=1"],
        "error: workload.members.0.params (member 'lightgbm', lightgbm) rejected by lightgbm: "
        "Check failed: (num_leaves) > (1)"),
    "config/lightgbm round count in params": (["workload=lightgbm", "+workload.members.0.params.n_estimators=50"],
        "error: workload.members.0.params.n_estimators: set workload.members.0.num_boost_round instead (the worker "
        "loop counts the rounds and checkpoints them; the library would stop at its own count)"),
    "config/xgboost metric in params": (["+workload.members.0.params.eval_metric=mae"],
        "error: workload.members.0.params.eval_metric: the validation metric is RMSE, which early stopping, the "
        "best round and the ensemble's weights are judged on (the objective may change)"),
    "config/zero workers": (["cluster.num_workers=0"], "error: cluster.num_workers must be >= 1, got 0"),
    "config/negative retries": (["cluster.max_failures=-1"], "error: cluster.max_failures must be >= 0, got -1"),
    "config/validation fraction": (["data.validation_fraction=1.5"],
        "error: data.validation_fraction must be between 0 and 1, got 1.5"),
    "config/negative read retries": (["data.read_retries=-1"], "error: data.read_retries must be >= 0, got -1"),
    "config/no categories kept": (["data.max_categories=0"], "error: data.max_categories must be >= 1, got 0"),
    "config/too few synthetic rows": (["data.synthetic.rows=10"], "error: data.synthetic.rows must be >= 100, got 10"),
    "config/address mode without address": (["cluster=address", "cluster.address=null"],
        "error: cluster.address is required with cluster=address (use 'auto' inside a RayJob)"),
    "config/server tracking without uri": (["tracking=server"],
        "error: tracking=server needs tracking.uri=... or MLFLOW_TRACKING_URI"),
    "config/duplicate member names": (["workload.members.1.name=xgb_deep"],
        "error: workload.members names must be unique, got ['xgb_deep', 'xgb_deep', 'lgbm']"),
    "config/checkpoint every 0 rounds": (["workload.checkpoint_every=0"],
        "error: workload.checkpoint_every must be >= 1, got 0"),
    "config/shard memory budget of 0 MB": (["workload.shard_memory_budget_mb=0"],
        "error: workload.shard_memory_budget_mb must be > 0 (or null), got 0.0"),
    "config/early stopping after 0 rounds": (["workload.members.1.early_stopping_rounds=0"],
        "error: workload.members.1.early_stopping_rounds must be >= 1 (or null), got 0"),
    "config/the library's own early stopping": (["+workload.members.2.params.early_stopping_round=10"],
        "error: workload.members.2.params.early_stopping_round: set workload.members.2.early_stopping_rounds "
        "instead (the worker loop stops, keeps the best round and checkpoints it)"),
    "config/object store below Ray's minimum": (["cluster.object_store_memory=1000"],
        "error: cluster.object_store_memory must be >= 78643200 bytes (75 MiB, Ray's minimum) or null "
        "(30% of the machine's memory), got 1000"),
    "config/unknown promotion metric": (["promote.metric=auc"], "error: promote.metric must be one of rmse, mae, r2, got 'auc'"),
    "config/promotion without a registered version": (["promote.enabled=true", "workload.register=false"],
        "error: promote.enabled=true needs workload.register=true: the gate judges the version the run registers"),
    "config/promotion of a text classifier": (["workload=bert", "data=text_synthetic", "promote.enabled=true"],
        "error: promote.enabled=true does not apply to workload=bert: the gate scores regression models (rmse, "
        "mae, r2) on rows with a numeric target, and BERT registers a text classifier"),
    "config/tracking uri with local tracking": (["tracking.uri=http://mlflow:5000"],
        "error: tracking.uri=http://mlflow:5000 does not apply to tracking=local (runs go to the SQLite store under "
        "tracking.local_dir); add tracking=server to log there"),
    "config/cluster address with a local cluster": (["cluster.address=head:6379"],
        "error: cluster.address=head:6379 does not apply to cluster=local (an in-process Ray); add cluster=address "
        "to join that cluster"),
    "config/local cluster size on a joined cluster": (["cluster=address", "cluster.address=head:6379",
                                                        "cluster.num_cpus=8"],
        "error: cluster.num_cpus applies to cluster=local only: a joined cluster's size and dashboard are set where "
        "it runs (on Kubernetes, the chart's values)"),
    "config/borrowing idle CPUs on a joined cluster": (["cluster=address", "cluster.address=head:6379",
                                                        "cluster.borrow_idle_cpus=false"],
        "error: cluster.borrow_idle_cpus applies to cluster=local only: a joined cluster's free CPUs are not one "
        "worker's to take"),
    "config/a column both excluded and listed": (["data.features=[price,transaction_id]"],
        "error: data.exclude names transaction_id, which data.features lists: exclude applies only when "
        "data.features is null (every column but the target)"),
    "config/bert with a feature option": (["workload=bert", "data=text_synthetic", "data.scale=true"],
        "error: data.scale does not apply to workload=bert: text classification reads data.text.column and "
        "data.target only (the feature options are for GBDT workloads)"),
    "config/tune fixed param that is also searched": (["workload=tune", "+workload.params.max_depth=4"],
        "error: workload.params.max_depth is also searched (workload.space.max_depth), and every trial's sampled "
        "value would replace it: fix it with ~workload.space.max_depth, or drop workload.params.max_depth"),
    "config/an ensemble on text data": (["data=text_synthetic"],
        "error: workload=ensemble trains on tabular data: data=text_synthetic is for workload=bert (use "
        "data=synthetic, parquet, csv or jsonl)"),
    "config/a search on text data": (["workload=tune", "data=text_synthetic"],
        "error: workload=tune trains on tabular data: data=text_synthetic is for workload=bert (use "
        "data=synthetic, parquet, csv or jsonl)"),
    "config/promotion option without the gate": (["promote.margin=0.01"],
        "error: promote.margin is set but promote.enabled=false: the gate does not run after this training run; "
        "add promote.enabled=true"),
    "config/tabular generator option for generated text": (["workload=bert", "data=text_synthetic",
                                                              "data.synthetic.rows=1000"],
        "error: data.synthetic.rows applies to data=synthetic only (this source is data=text_synthetic; generated "
        "text takes data.text.synthetic.rows)"),
    "config/text option for a GBDT model": (["data.text.column=review"],
        "error: data.text.column applies to workload=bert only: workload=ensemble trains on the columns "
        "data.features (or all but data.target and data.exclude) name"),
    "config/external-memory budget without XGBoost": (["workload=lightgbm", "workload.shard_memory_budget_mb=512"],
        "error: workload.shard_memory_budget_mb applies to XGBoost members (their external-memory matrix); "
        "workload=lightgbm has none"),
    "config/observability option with observability off": (["observability.enabled=false",
                                                             "observability.sample_interval_s=1"],
        "error: observability.sample_interval_s is set but observability.enabled=false turns sampling, cost and "
        "log upload off; drop one of them"),
    "config/local store directory with a tracking server": (["tracking=server", "tracking.uri=http://mlflow:5000",
                                                              "tracking.local_dir=runs"],
        "error: tracking.local_dir=runs does not apply to tracking=server (the server keeps runs and artifacts); "
        "drop it, or use tracking=local"),
    "config/skew threshold with listed log1p columns": (["data.log1p=[price]", "data.skew_threshold=1.0"],
        "error: data.skew_threshold picks the log1p columns only when data.log1p is null; data.log1p lists them "
        "(price)"),
    "config/bert tokenizer trained on no rows": (["workload=bert", "data=text_synthetic",
                                                   "workload.model.from_config.tokenizer_sample_rows=0"],
        "error: workload.model.from_config.tokenizer_sample_rows must be >= 1 (or null: all rows), got 0"),
    "config/bert architecture with a checkpoint": (["workload=bert", "data=text_synthetic", "workload.model.path=/tmp",
                                                    "workload.model.from_config.hidden_size=64"],
        "error: workload.model.from_config.hidden_size sizes a randomly initialised model; workload.model.path "
        "loads a checkpoint with its own sizes"),
    "config/bert with no attention heads": (["workload=bert", "data=text_synthetic",
                                             "workload.model.from_config.num_attention_heads=0"],
        "error: workload.model.from_config.num_attention_heads must be >= 1, got 0"),
    "config/tune range without an end": (["workload=tune", "workload.space.max_depth.high=inf"],
        "error: workload.space.max_depth: low and high must be finite numbers, got low=3 high=inf"),
    "config/a generator without users": (["data.synthetic.users=0"], "error: data.synthetic.users must be >= 1, got 0"),
    "config/a folder for the samples' CSV file": (["observability.csv_path=/"],
        "error: observability.csv_path='/' must be a file's path, not a folder"),
    "config/a misspelt XGBoost parameter": (["+workload.members.0.params.max_dept=4"],
        "error: workload.members.0.params (member 'xgb_deep', xgboost) rejected by xgboost: unknown parameter(s) "
        "max_dept (XGBoost would ignore them)"),
    "config/a misspelt LightGBM parameter": (["workload=lightgbm", "+workload.members.0.params.num_leavs=20"],
        "error: workload.members.0.params (member 'lightgbm', lightgbm) rejected by lightgbm: unknown parameter(s) "
        "num_leavs (LightGBM would ignore them)"),
    "config/a model name MLflow refuses": (["workload.registered_model_name=team/demand"],
        "error: workload.registered_model_name 'team/demand' is not a model name MLflow takes (no '/' or ':')"),
    "config/text generator option for text files": (["workload=bert", "data=jsonl", "data.path=x.jsonl",
                                                      "data.target=label", "data.text.synthetic.rows=500"],
        "error: data.text.synthetic.rows applies to data=text_synthetic only (this source is data=jsonl)"),
    "config/bert fp16 on CPU": (["workload=bert", "data=text_synthetic", "workload.precision=fp16"],
        "error: workload.precision=fp16 needs GPU workers (cluster.gpus_per_worker >= 1); "
        "CPU workers train in fp32 (precision=auto or fp32)"),
    "config/bert on tabular data": (["workload=bert"],
        "error: workload=bert needs text data: data=text_synthetic, or data=parquet/csv/jsonl with "
        "data.text.column and data.target (the label column)"),
    "config/credentials in the data URI": (["data=parquet", "data.target=y",
                                             "data.path='s3://b/tx?access_key=AKIA&secret_key=hunter2'"],
        "error: data.path carries credentials in its URI; pass them as environment variables "
        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a Secret on Kubernetes) instead"),
    "config/tune grace period": (["workload=tune", "workload.scheduler.grace_period=0"],
        "error: workload.scheduler.grace_period must be >= 1 round, got 0"),
    "config/tune fixed param the library rejects": (["workload=tune", "+workload.params.max_depth=-2"],
        "error: workload.params rejected by xgboost: value -2 for Parameter max_depth should be greater equal to 0"),
    "config/tune range the library rejects at one end": (
        ["workload=tune", "workload.kind=lightgbm", "+workload.space.num_leaves={{type: int, low: 1, high: 64}}"],
        "error: workload.space.num_leaves: 1 rejected by lightgbm: Check failed: (num_leaves) > (1)"),
    "config/a workload name of another schema's preset": (["workload=tune", "workload.name=xgboost"],
        "error: workload.name=xgboost does not match this preset's schema, tune_schema (its names: tune); to run "
        "xgboost, pick its preset: workload=xgboost"),
    "config/a new key in free-form params without +": (["workload=tune", "workload.params.gamma=1"],
        "error: bad config: Could not override 'workload.params.gamma'.; Key 'gamma' is not in struct; full_key: "
        "workload.params.gamma; To append to your config use +workload.params.gamma=1"),
    "config/tune metric in fixed params": (["workload=tune", "+workload.params.eval_metric=mae"],
        "error: workload.params.eval_metric: the validation metric is RMSE, which early stopping, the best round "
        "and the ensemble's weights are judged on (the objective may change)"),
    "config/tune round count in fixed params": (["workload=tune", "workload.kind=lightgbm",
                                                 "+workload.params.n_estimators=50"],
        "error: workload.params.n_estimators: set workload.num_boost_round (or search "
        "workload.space.num_boost_round) instead (the worker loop counts the rounds and checkpoints them; the "
        "library would stop at its own count)"),
    "config/tune with the library's own early stopping": (["workload=tune", "workload.kind=lightgbm",
                                                           "+workload.params.early_stopping_round=10"],
        "error: workload.params.early_stopping_round: drop it: the search stops weak trials early "
        "(workload.scheduler.type=asha), and a trial runs the rounds it reports and checkpoints"),
    "config/negative seed": (["seed=-1"], "error: seed must be >= 0 and < 2147483648 (2**31), got -1"),
    "config/synthetic seed past 2**31": (["data.synthetic.seed=2147483648"],
        "error: data.synthetic.seed must be >= 0 and < 2147483648 (2**31), got 2147483648"),
    "config/negative text generator seed": (["workload=bert", "data=text_synthetic", "data.text.synthetic.seed=-1"],
        "error: data.text.synthetic.seed must be >= 0 and < 2147483648 (2**31), got -1"),
    "config/negative search seed": (["workload=tune", "workload.search.seed=-1"],
        "error: workload.search.seed must be >= 0 and < 2147483648 (2**31), got -1"),
    "config/promotion alias MLflow reserves": (["promote.alias=latest"],
        "error: promote.alias 'latest' is reserved by MLflow ('latest' and v<number> name versions); pick another "
        "name"),
    "config/promotion alias that names a version": (["promote.alias=V12"],
        "error: promote.alias 'V12' is reserved by MLflow ('latest' and v<number> name versions); pick another "
        "name"),
    "config/train poll interval of 0 s": (["cluster.train_poll_interval_s=0"],
        "error: cluster.train_poll_interval_s must be > 0, got 0.0"),
    "config/a local Ray of 0 CPUs": (["cluster.num_cpus=0"],
        "error: cluster.num_cpus must be >= 1 or null (this machine's), got 0"),
    "config/a local Ray of -1 GPUs": (["cluster.num_gpus=-1"],
        "error: cluster.num_gpus must be >= 0 or null (this machine's), got -1"),
    "config/bert gradient clipped to 0": (["workload=bert", "data=text_synthetic", "workload.max_grad_norm=0"],
        "error: workload.max_grad_norm must be > 0, got 0.0"),
    "config/bert negative weight decay": (["workload=bert", "data=text_synthetic", "workload.weight_decay=-0.1"],
        "error: workload.weight_decay must be >= 0, got -0.1"),
    "config/a Hydra setting": (["hydra.run.dir=out"],
        "error: bad config: hydra.run.dir=out: Hydra's own settings (hydra.*, hydra/...) do nothing here (no output "
        "directory, logging or sweeps); drop it (--config-dir DIR adds config directories)"),
    "config/an appended Hydra setting": (["+hydra.job.chdir=true"],
        "error: bad config: +hydra.job.chdir=true: Hydra's own settings (hydra.*, hydra/...) do nothing here (no "
        "output directory, logging or sweeps); drop it (--config-dir DIR adds config directories)"),
    "config/a Hydra config group": (["hydra/job_logging=disabled"],
        "error: bad config: hydra/job_logging=disabled: Hydra's own settings (hydra.*, hydra/...) do nothing here "
        "(no output directory, logging or sweeps); drop it (--config-dir DIR adds config directories)"),
    "config/no member at a time": (["workload.max_concurrent_members=0"],
        "error: workload.max_concurrent_members must be >= 1 or null (as many as fit), got 0"),
    "config/a run name with a slash": (["run_name=team/nightly"],
        "error: run_name 'team/nightly' must be a plain name: no '/', '\\' or quotes, not empty, '.' or '..' (it "
        "names the run's folder under cluster.storage_path and its MLflow run)"),
    "config/a run name with a quote": (["run_name=\"it's\""],
        "error: run_name \"it's\" must be a plain name: no '/', '\\' or quotes, not empty, '.' or '..' (it "
        "names the run's folder under cluster.storage_path and its MLflow run)"),
    "config/a URI for the samples' CSV file": (["observability.csv_path=s3://bucket/samples.csv"],
        "error: observability.csv_path='s3://bucket/samples.csv' must be a local file's path, not a URI (the "
        "samples are in the MLflow run too, observability/samples.csv)"),
}
CLI = {
    "cli/no Ray cluster at the address": (["cluster=address", "cluster.address=127.0.0.1:9"],
        "error: nothing answers at cluster.address=127.0.0.1:9 (a TCP connection to 127.0.0.1:9 failed: Connection "
        "refused); is the Ray head running there, and is that its GCS port (6379) or, with ray://, its client "
        "port (10001)?"),
    "cli/no Ray client server at the address": (["cluster=address", "cluster.address=ray://127.0.0.1:9"],
        "error: nothing answers at cluster.address=ray://127.0.0.1:9 (a TCP connection to 127.0.0.1:9 failed: "
        "Connection refused); is the Ray head running there, and is that its GCS port (6379) or, with ray://, "
        "its client port (10001)?"),
    "cli/an HTTP server at the address": (["cluster=address", "cluster.address=127.0.0.1:{http}"],
        re.compile(r"error: cluster\.address=127\.0\.0\.1:{http} answers, but not as a Ray head's GCS \(gRPC "
                   r"health check: UNAVAILABLE, Failed parsing HTTP/2 .+\); is that the head's GCS port \(6379\), "
                   r"not its dashboard \(8265\) or another service\?")),
    "cli/a silent port at the address": (["cluster=address", "cluster.address=127.0.0.1:{silent}"],
        "error: cluster.address=127.0.0.1:{silent} answers, but not as a Ray head's GCS (gRPC health check: "
        "DEADLINE_EXCEEDED, Deadline Exceeded); is that the head's GCS port (6379), not its dashboard (8265) or "
        "another service?"),
    "cli/cluster address without a port number": (["cluster=address", "cluster.address=head:gcs"],
        "error: cluster.address=head:gcs: the port must be a number (host:port or ray://host:port)"),
    "cli/unknown flag": (["--fast"], "error: unknown option --fast (options: --help, --cfg, --config-dir DIR; "
                         "everything else is KEY=VALUE)"),
    "cli/config dir that does not exist": (["--config-dir", "{d}/no-such-conf"],
        "error: --config-dir {d}/no-such-conf: not a directory"),
    "cli/config dir flag without a directory": (["--config-dir"], "error: --config-dir needs a directory"),
    "cli/parquet without a path": (["data=parquet", "data.target=y"],
        "error: bad config: Structured config of type `DataConfig` has missing mandatory value: path; "
        "full_key: data.path"),
    "cli/tracking server unreachable": (["tracking=server", "tracking.uri=http://127.0.0.1:9", "data=parquet",
                                         "data.path={d}/ok.parquet", "data.target=y"],
        re.compile(r"error: cannot use MLflow tracking at http://127\.0\.0\.1:9: .+")),
}
DATA = {
    "data/missing path": (["data=parquet", "data.path={d}/nope", "data.target=y"], "error: data.path does not exist: {d}/nope"),
    "data/empty dataset": (["data=parquet", "data.path={d}/empty.parquet", "data.target=y"],
        "error: dataset at {d}/empty.parquet is empty (no rows)"),
    "data/directory without data files": (["data=parquet", "data.path={d}/no_files", "data.target=y"],
        "error: no parquet files at data.path {d}/no_files"),
    "data/the user's rows with the synthetic source": (["data.path={d}/exported", "data.target=y"],
        "error: data.path={d}/exported holds files that data=synthetic did not write (part-00000.parquet) and would "
        "replace with generated rows: to train on them, name their format (data=parquet, data=csv or data=jsonl); "
        "to generate, point data.path at an empty or new folder"),
    "data/the user's rows with the synthetic text source": (["workload=bert", "data=text_synthetic",
                                                               "data.path={d}/exported"],
        "error: data.path={d}/exported holds files that data=text_synthetic did not write (part-00000.parquet) and "
        "would replace with generated rows: to train on them, name their format (data=parquet, data=csv or "
        "data=jsonl); to generate, point data.path at an empty or new folder"),
    "data/promotion rows that do not exist": (["data=parquet", "data.path={d}/ok.parquet", "data.target=y",
                                                "promote.enabled=true", "promote.data_path={d}/nope.parquet"],
        "error: promote.data_path does not exist: {d}/nope.parquet"),
    "data/promotion rows with a text target": (["data=parquet", "data.path={d}/ok.parquet", "data.target=y",
                                                 "promote.enabled=true", "promote.data_path={d}/text_target.parquet"],
        "error: promote.data_path {d}/text_target.parquet: target 'y' has type string; a numeric column is required"),
    "data/promotion rows without a feature column": (["data=parquet", "data.path={d}/ok.parquet", "data.target=y",
                                                      "promote.enabled=true",
                                                      "promote.data_path={d}/target_only.parquet"],
        "error: promote.data_path {d}/target_only.parquet lacks the model's feature column(s) a"),
    "data/missing target": (["data=csv", "data.path={d}/ok.csv", "data.target=price"],
        "error: data.target 'price' is not a column of {d}/ok.csv (columns: a, y)"),
    "data/non-numeric target": (["data=parquet", "data.path={d}/text_target.parquet", "data.target=y"],
        "error: data.target 'y' has type string; a numeric column is required"),
    "data/corrupt parquet": (["data=parquet", "data.path={d}/corrupt.parquet", "data.target=y"],
        re.compile(r"error: cannot read parquet data at {d}/corrupt\.parquet: .*(Parquet|magic bytes).*")),
    "data/bert text column missing": (["workload=bert", "data=jsonl", "data.path={d}/reviews.jsonl",
                                       "data.text.column=review", "data.target=label"],
        "error: data.text.column 'review' is not a column of {d}/reviews.jsonl (columns: body, label)"),
    "data/bert numeric text": (["workload=bert", "data=parquet", "data.path={d}/ok.parquet",
                                "data.text.column=a", "data.target=y"],
        "error: data.text.column 'a' has type double; a string column is required"),
}
# id -> (arguments, the exact error line, whether it comes before Ray starts: the in-process Ray's
# size is the config's, except GPUs left to Ray's detection)
RESOURCES = {
    "resources/more CPUs than the cluster has": (CLUSTER_2CPU + ["cluster.num_workers=8", "cluster.cpus_per_worker=4"],
        "error: training needs 8 workers x (4 CPU) but the cluster (1 node(s), 2 CPUs) can hold only 0; "
        "not enough CPU: lower cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker", True),
    "resources/bert on more CPUs than the cluster has": (["cluster.num_cpus=2", "workload=bert", "data=text_synthetic",
                                                          "data.text.synthetic.rows=1000", "cluster.num_workers=3"],
        "error: training needs 3 workers x (1 CPU) but the cluster (1 node(s), 2 CPUs) can hold only 2; "
        "not enough CPU: lower cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker", True),
    "resources/GPU workers on a CPU-only cluster": (CLUSTER_2CPU + ["cluster.num_workers=2", "cluster.gpus_per_worker=1"],
        "error: training needs 2 workers x (1 CPU + 1 GPU) but the cluster (1 node(s), 2 CPUs, 0 GPUs) can hold "
        "only 0; not enough GPU: lower cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker", False),
    "resources/GPU workers with cluster.num_gpus=0": (CLUSTER_2CPU + ["cluster.num_gpus=0", "cluster.gpus_per_worker=1"],
        "error: training needs 1 workers x (1 CPU + 1 GPU) but the cluster (1 node(s), 2 CPUs, 0 GPUs) can hold "
        "only 0; not enough GPU: lower cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker", True),
    # Streamed data is read by tasks that need a CPU while the workers train: with every CPU
    # taken by workers the stream would wait forever.
    "resources/streamed data with every CPU training": (CLUSTER_2CPU + ["cluster.num_workers=2", "data.materialize=false"],
        "error: training needs 2 workers x (1 CPU) but the cluster (1 node(s), 2 CPUs) can hold only 1 "
        "(data.materialize=false streams the data while training and keeps one CPU free for it); not enough CPU: "
        "lower cluster.num_workers / cluster.cpus_per_worker / cluster.gpus_per_worker or set data.materialize=true",
        True),
}
# Found by a pass over the rows, so Ray is up; still before training and before any MLflow run.
FOUND_READING_EVERY_ROW = {
    "data/infinite target": (["data=parquet", "data.path={d}/inf_target.parquet", "data.target=y"],
        "error: data.target 'y' has 2 infinite value(s) in 40 rows; a target must be finite: fix or drop those rows"),
    "data/target missing everywhere": (["data=parquet", "data.path={d}/nan_target.parquet", "data.target=y"],
        "error: data.target 'y' has no finite value in 40 rows (all missing)"),
    "data/feature infinite everywhere": (["data=parquet", "data.path={d}/inf_feature.parquet", "data.target=y"],
        "error: feature column(s) with infinite values: 'b' (40 rows); replace them with a finite or missing "
        "value, or leave the column out (data.exclude)"),
    "data/a file without a feature column": (["data=parquet", "data.path={d}/drift", "data.target=y"],
        "error: cannot read parquet data at {d}/drift: column(s) b missing from some of its files (the first file "
        "has them): give every file the same columns, or leave those out (data.exclude)"),
}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    pd.DataFrame({"a": pd.Series([], dtype=float), "y": pd.Series([], dtype=float)}).to_parquet(d / "empty.parquet")
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["x", "y", "z"]}).to_parquet(d / "text_target.parquet")
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]}).to_csv(d / "ok.csv", index=False)
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]}).to_parquet(d / "ok.parquet")
    pd.DataFrame({"y": [1.0, 2.0, 3.0]}).to_parquet(d / "target_only.parquet")
    pd.DataFrame({"a": [float(i) for i in range(10)], "y": [float(i) for i in range(10)]}).to_parquet(d / "ten.parquet")
    pd.DataFrame({"body": ["good", "bad"], "label": ["pos", "neg"]}).to_json(d / "reviews.jsonl", orient="records",
                                                                             lines=True)
    a = [float(i) for i in range(40)]
    pd.DataFrame({"a": a, "y": [float("inf"), float("-inf")] + a[2:]}).to_parquet(d / "inf_target.parquet")
    pd.DataFrame({"a": a, "y": [float("nan")] * 40}).to_parquet(d / "nan_target.parquet")
    pd.DataFrame({"a": a, "b": [float("inf")] * 40, "y": a}).to_parquet(d / "inf_feature.parquet")
    (d / "drift").mkdir()  # a column added to the data later: older files lack it
    pd.DataFrame({"a": a, "b": a, "y": a}).to_parquet(d / "drift" / "part-0.parquet")
    pd.DataFrame({"a": a, "y": a}).to_parquet(d / "drift" / "part-1.parquet")
    (d / "corrupt.parquet").write_bytes(b"this is not a parquet file\n" * 10)
    (d / "no_files").mkdir()
    (d / "exported").mkdir()  # the user's rows as Spark or Ray write them: part-* files
    pd.DataFrame({"a": a, "y": a}).to_parquet(d / "exported" / "part-00000.parquet")
    return d


@pytest.fixture(scope="module")
def strangers():
    """Ports where something other than Ray listens: an HTTP server (as a head's dashboard or an
    MLflow server would be) and a port that accepts connections and never says a word."""
    import socket
    import threading
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    http = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in iter(int, 1)], daemon=True).start()
    yield {"http": http.server_address[1], "silent": silent.getsockname()[1]}
    http.shutdown()
    silent.close()


def expect(message, d: Path, **ports):
    if isinstance(message, re.Pattern):
        pattern = message.pattern.replace("{d}", re.escape(str(d)))
        for name, port in ports.items():
            pattern = pattern.replace("{" + name + "}", str(port))
        return re.compile(pattern)
    return message.format(d=d, **ports)


def assert_one_line(line: str, message) -> None:
    if isinstance(message, re.Pattern):
        assert message.fullmatch(line), f"{line!r} does not match {message.pattern!r}"
    else:
        assert line == message


def assert_nothing_written(workdir: Path) -> None:
    """No model version, no MLflow run in any experiment, no checkpoint under cluster.storage_path."""
    from mlflow.tracking import MlflowClient

    assert registered_versions(workdir) == []
    db = workdir / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments)
    results = workdir / "ray_results"
    assert not results.exists() or not any(results.rglob("*")), list(results.rglob("*"))


IN_PROCESS = {**CONFIG, **CLI, **DATA}


@pytest.mark.parametrize("case", list(IN_PROCESS))
def test_cli_refuses_bad_input(case, bad_data, strangers, workdir, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args, message = IN_PROCESS[case]
    # Ray's log handlers keep the stderr of the case that first imported Ray; in a real process
    # that is the process's stderr, here an earlier case's closed capture: point them at this one's.
    for handler in logging.getLogger("ray").handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            handler.stream = sys.stderr  # not setStream(): it flushes the closed one first
    code = main([a.format(d=bad_data, **strangers) for a in args])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == EXIT_USER_ERROR, err
    assert len([l for l in lines if l.startswith("error:")]) == 1 and "Traceback" not in err, err
    assert_one_line(lines[-1], expect(message, bad_data, **strangers))
    assert_nothing_written(workdir)
    assert pd.read_parquet(bad_data / "exported").shape == (40, 2)  # the user's rows are left as they were


def test_an_in_process_call_leaves_the_callers_ray_running(ray_session, workdir, capsys):
    """main() called from a program (a notebook, this test session) that already runs Ray: the
    call ends, its Ray stays up for the caller's next call."""
    assert main(["workload=no_such_workload"]) == EXIT_USER_ERROR
    assert "workload" in capsys.readouterr().err
    assert ray_session.is_initialized() and [n for n in ray_session.nodes() if n["Alive"]]


def test_another_port_of_a_live_cluster_is_not_taken_for_its_gcs(ray_session, tmp_path):
    """The session's live Ray node: its metrics port answers HTTP, not the GCS's gRPC. A fresh
    process (run_cli), as a user runs it: this one is already attached to the session's Ray."""
    node = [n for n in ray_session.nodes() if n["Alive"]][0]
    address = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    proc = run_cli(["cluster=address", f"cluster.address={address}"], tmp_path, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith(f"error: cluster.address={address} answers, but not as a Ray head's GCS (gRPC "
                                "health check: UNAVAILABLE"), lines[-1]
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("case", list(RESOURCES))
def test_impossible_resource_requests_fail_fast(case, tmp_path):
    """In a fresh process, as a user meets it; `resource_wait_s` is 0 in local mode, so it fails at
    once: before Ray starts where the config sizes the in-process Ray, else
    as soon as Ray has found its GPUs."""
    args, message, before_start = RESOURCES[case]
    proc = run_cli(args, tmp_path, timeout=180)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert_one_line(lines[-1], message)
    started = [l for l in proc.stdout.splitlines() if "] ray: 1 node(s)" in l]
    assert bool(started) is not before_start, proc.stdout[-2000:]
    assert_nothing_written(tmp_path)


def test_non_finite_values_fail_before_training(bad_data, tmp_path):
    """In a fresh process, as a user meets it: the check reads every row through Ray Data, so
    Ray starts, but no boosting round runs and nothing is written."""
    args, message = FOUND_READING_EVERY_ROW["data/infinite target"]
    proc = run_cli([*CLUSTER_2CPU[:1], "workload=xgboost", *[a.format(d=bad_data) for a in args]], tmp_path,
                   timeout=180)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "round " not in proc.stdout  # no boosting round ever ran
    assert_one_line(lines[-1], message)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("case", [c for c in FOUND_READING_EVERY_ROW if c != "data/infinite target"])
def test_other_data_found_reading_every_row_is_the_same_kind_of_error(case, bad_data, ray_session):
    """The neighbours of the case above, through the same check on the session's Ray (the CLI
    turns this UserError into the one line and exit status the test above checks)."""
    from training.data.prepare import prepare
    from training.errors import UserError

    args, message = FOUND_READING_EVERY_ROW[case]
    with pytest.raises(UserError) as raised:
        prepare(load_config(*[a.format(d=bad_data) for a in args]).data)
    assert f"error: {raised.value}" == message.format(d=bad_data)


# --- chart values: the real Helm engine ------------------------------------------------------

CHART = {
    "chart/train group that does not exist": ({"train": {"workerGroup": "nope"}},
        'train.workerGroup="nope": no such worker group (defined: cpu, gpu)'),
    "chart/more CPUs per worker than a pod has": ({"train": {"cpusPerWorker": 8}},
        "train.cpusPerWorker=8 exceeds the 4 CPUs of one workerGroups.cpu pod (resources.limits.cpu); "
        "the job would wait forever"),
    "chart/cluster override owned by the chart": ({"job": {"overrides": ["cluster.num_workers=3"]}},
        'job.overrides: "cluster.num_workers=3" is derived by the chart (cluster.* from workerGroups and storage, '
        "tracking=server and its URI); remove it"),
    "chart/auth disabled without acknowledgement": ({"auth": {"mode": "disabled"}},
        "auth.mode=disabled turns off Ray token authentication (anyone who reaches the dashboard can run code); "
        "set auth.acknowledgeDisabled=true to confirm"),
    "chart/MLflow auth for an external server without its Secret": (
        {"mlflow": {"enabled": False, "externalUri": "https://mlflow.example.com", "auth": {"enabled": True}}},
        "mlflow.auth.enabled needs mlflow.auth.existingSecret (keys username, password and, for the chart's own "
        "server, server_secret_key), or "
        "mlflow.auth.createSecret with the chart's own MLflow server (mlflow.enabled)"),
    "chart/MLflow auth permission typo": ({"mlflow": {"auth": {"enabled": True, "defaultPermission": "WRITE"}}},
        "at '/mlflow/auth/defaultPermission'"),
    "chart/object store larger than the pod": ({"workerGroups": {"cpu": {"objectStoreMemory": "15Gi"}}},
        "workerGroups.cpu: the object store (15360 MiB) plus storage.shmSize (2Gi) must stay below "
        "resources.limits.memory=16Gi (/dev/shm counts against it); lower objectStoreMemory or raise the limit"),
    "chart/objectStore storage without a URI": ({"storage": {"type": "objectStore"}},
        "at '/storage/objectStore/uri': minLength: got 0, want 1"),
    "chart/memory quantity typo": ({"head": {"resources": {"limits": {"memory": "8Gb"}}}},
        "at '/head/resources/limits/memory': '8Gb' does not match pattern"),
    "chart/bad NetworkPolicy CIDR": ({"networkPolicy": {"dashboardFrom": [{"ipBlock": {"cidr": "everywhere"}}]}},
        "at '/networkPolicy/dashboardFrom/0/ipBlock/cidr': 'everywhere' does not match pattern"),
}


@pytest.mark.parametrize("case", list(CHART))
def test_chart_refuses_bad_values(case):
    import helm_python

    sys.path.insert(0, str(REPO / "tests" / "k8s"))
    import k8s_support as k

    values, message = CHART[case]
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as err:
        k.render(values)
    assert message in str(err.value), str(err.value)


def test_a_split_with_fewer_rows_than_workers_is_one_line_before_any_run(bad_data, ray_session):
    """Each Train worker boosts and scores on an equal shard of its own: 10 rows leave 2 for
    validation, too few for 3 workers (their metrics divided by zero rows)."""
    from training.data.prepare import prepare
    from training.errors import UserError
    from training.gbdt.slots import check_rows

    data = prepare(load_config("data=parquet", f"data.path={bad_data}/ten.parquet", "data.target=y").data)
    assert data.valid_rows == 2
    check_rows(data, 2)
    with pytest.raises(UserError) as raised:
        check_rows(data, 3)
    assert str(raised.value) == ("the validation split has 2 row(s), fewer than cluster.num_workers=3: add rows or "
                                 "train on fewer workers")
