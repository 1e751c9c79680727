"""The per-worker training function for XGBoost and LightGBM under Ray Train.

Runs in every Ray Train worker: reads its shard of the preprocessed splits, builds the
native data structure, boosts, and reports metrics plus a checkpoint every
`checkpoint_every` rounds (each report is a synchronous round trip through the Train
controller, so per-round reporting is what makes stock callbacks slow). On restart after a
failure it resumes from the latest checkpoint and boosts only the remaining rounds.

One worker group can train several members in sequence (`cfg["members"]`): the data is
loaded once and the group's start-up (controller, worker and helper actors: ~8 s per fit
on 2 cores) is paid once. Each member's files are then a subdirectory of the checkpoint,
and a finished member's files ride along in every later checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

MODEL_FILES = {"xgboost": "model.ubj", "lightgbm": "model.txt"}
STATE_FILE = "state.json"


def _shard_arrays(cfg: Dict[str, Any], name: str) -> Tuple[np.ndarray, np.ndarray]:
    """This worker's shard of a dataset as a float32 matrix and a label vector.

    With pre-split shards (materialized data) the worker reads its blocks straight from the
    object store; otherwise it streams its part through Ray Train's dataset sharding.
    """
    import ray.train

    features, label = cfg["features"], cfg["label"]
    if cfg.get("shards"):
        source = cfg["shards"][name][ray.train.get_context().get_world_rank()]
    else:
        source = ray.train.get_dataset_shard(name)
    cols: Dict[str, List[np.ndarray]] = {c: [] for c in features + [label]}
    for batch in source.iter_batches(batch_size=None, batch_format="numpy"):
        for c in cols:
            cols[c].append(batch[c])
    if not cols[label]:
        return np.empty((0, len(features)), np.float32), np.empty(0, np.float32)
    x = np.column_stack([np.concatenate(cols[c]).astype(np.float32, copy=False) for c in features])
    return x, np.concatenate(cols[label]).astype(np.float32, copy=False)


def read_state(checkpoint_dir: str, member: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """A member's state (rounds, history, times) in a local checkpoint directory: top level for a
    single member, `<member>/` in a slot's checkpoint; None when that member had not started."""
    path = os.path.join(checkpoint_dir, member, STATE_FILE) if member else os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def finished(state: Optional[Dict[str, Any]], member: Dict[str, Any]) -> bool:
    return state is not None and state["rounds"] >= member["num_boost_round"]


def load_booster(kind: str, path: str):
    """An XGBoost or LightGBM booster from its model file (MODEL_FILES[kind])."""
    if kind == "xgboost":
        import xgboost as xgb
        booster = xgb.Booster()
        booster.load_model(path)
        return booster
    import lightgbm as lgb
    return lgb.Booster(model_file=path)


def _restore(kind: str, subdir: Optional[str] = None):
    """(rounds done, model to continue from or None, validation history) from Ray Train's checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, None, []
    with ckpt.as_directory() as root:
        state = read_state(root, subdir)
        if state is None:  # this member had not started yet
            return 0, None, []
        model = load_booster(kind, os.path.join(root, subdir or "", MODEL_FILES[kind]))
    print(f"[{state['member']}] resuming from checkpoint at round {state['rounds']}", flush=True)
    return state["rounds"], model, state["history"]


class ThreadBudget:
    """Threads for one member: its worker's CPUs, plus, with `borrow_idle_cpus` (one machine, one
    worker per slot), the CPUs Ray holds free because other slots have finished. Without it the
    last member of the longest slot boosts on one core of an otherwise idle machine (LightGBM
    after XGBoost in `make run`: ~9 s alone). Checked when the member starts and every
    CHECK_EVERY rounds; both libraries take a new thread count between rounds, and their models
    do not depend on it (XGBoost's hist, LightGBM's deterministic=True: same predictions with 1
    and 2 threads, measured)."""

    CHECK_EVERY = 50

    def __init__(self, cfg: Dict[str, Any], reporter: "SparseReporter"):
        self.own = cfg["threads"]
        self.borrow = bool(cfg.get("borrow_idle_cpus"))
        self.member = cfg["member"]
        self.current = self.own
        self.reporter = reporter

    def now(self) -> int:
        if self.borrow:
            import ray

            free = int(ray.available_resources().get("CPU", 0))
            total = int(ray.cluster_resources().get("CPU", self.own))
            threads = max(self.own, min(total, self.own + free))
            if threads != self.current:
                print(f"[{self.member}] {threads} threads ({threads - self.own} idle CPU(s) borrowed)"
                      if threads > self.own else f"[{self.member}] back to {threads} thread(s)", flush=True)
            self.current = threads
        self.reporter.threads_used(self.current)
        return self.current

    def changed(self, done: int) -> Optional[int]:
        """The new thread count at a check round, when it changed."""
        if not self.borrow or done % self.CHECK_EVERY:
            return None
        before = self.current
        threads = self.now()
        return threads if threads != before else None


class SparseReporter:
    """Report to Ray Train every `every` rounds and at the last one; rank 0 attaches a checkpoint.

    `subdir` puts this member's files in a subdirectory of the checkpoint, beside the files of
    the members trained before it in the same worker group (`finished`: subdir -> file -> bytes);
    at the last round this member's own files are added to `finished`."""

    def __init__(self, cfg: Dict[str, Any], start_round: int, history: List[float],
                 subdir: Optional[str] = None, finished: Optional[Dict[str, Dict[str, bytes]]] = None):
        import ray.train

        self.subdir, self.finished = subdir, finished if finished is not None else {}
        self.kind, self.member = cfg["kind"], cfg["member"]
        self.every, self.total = cfg["checkpoint_every"], cfg["num_boost_round"]
        self.metric = cfg["metric"]
        self.start, self.history = start_round, history
        self.rank = ray.train.get_context().get_world_rank()
        self.t0 = time.perf_counter()
        self.reports = 0
        self.started_at = time.time()
        # Seconds per phase (load_s, build_s, boost_s), added to the last report's metrics so
        # that benchmarks read them from `Result.metrics` rather than from worker logs.
        self.phases: Dict[str, float] = {}
        ctx = ray.train.get_context()
        self.kill_at = cfg.get("kill_worker_at_round") if self.rank == ctx.get_world_size() - 1 else None
        self.marker = os.path.join(tempfile.gettempdir(), f"training-drill-{cfg.get('run_name', '')}-{self.member}")

    def _kill_once(self, done: int) -> None:
        """The fault drill: die like a preempted pod would (no cleanup), once per run and member."""
        import signal

        if os.path.exists(self.marker):
            return
        open(self.marker, "w").close()
        # Ray Train registers a report when its controller next polls the workers; a kill within
        # that window resumes from the checkpoint before. Wait it out, so that a drill always
        # resumes from the last checkpoint (a real preemption may land either way).
        time.sleep(2.0)
        print(f"[{self.member}] fault drill: killing worker {self.rank} (pid {os.getpid()}) at round {done}",
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def built(self, seconds: float) -> None:
        """The native datasets are ready: boosting (and the rate shown in progress lines) starts now."""
        self.phases["build_s"] = seconds
        self.t0 = time.perf_counter()

    def threads_used(self, threads: int) -> None:
        """The most threads the member boosted with goes into the last report's metrics."""
        self.phases["max_threads"] = max(self.phases.get("max_threads", 0), threads)

    def after_round(self, done: int, valid_value: float, save_model) -> None:
        """`done` counts rounds from the very start (resumed runs included)."""
        import ray.train

        if done == self.kill_at:
            self._kill_once(done)
        self.history.append(float(valid_value))
        if done % self.every and done != self.total:
            return
        self.reports += 1
        metrics = {"round": done, f"valid_{self.metric}": float(valid_value)}
        if done == self.total:
            metrics.update(self.phases, boost_s=time.perf_counter() - self.t0, peak_rss_mb=_peak_rss_mb())
        if self.rank != 0:
            ray.train.report(metrics)  # every worker must report the same number of times
            return
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        print(f"[{self.member}] round {done}/{self.total} valid-{self.metric}={valid_value:.4f} "
              f"({rate:.0f} rounds/s)", flush=True)
        with tempfile.TemporaryDirectory() as root:
            for name, files in self.finished.items():
                _write_files(os.path.join(root, name), files)
            d = os.path.join(root, self.subdir) if self.subdir else root
            os.makedirs(d, exist_ok=True)
            save_model(os.path.join(d, MODEL_FILES[self.kind]))
            state = {"member": self.member, "rounds": done, "history": self.history, "metric": self.metric,
                     "started_at": self.started_at, "finished_at": time.time()}
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump(state, f)
            if self.subdir and done == self.total:
                self.finished[self.subdir] = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(root))


def _write_files(d: str, files: Dict[str, bytes]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def _finished_members(members: List[Dict[str, Any]]) -> Dict[str, Dict[str, bytes]]:
    """Files of the members a resumed worker group had already finished, from its checkpoint."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}
    done = {}
    with ckpt.as_directory() as root:
        for m in members:
            if finished(read_state(root, m["member"]), m):
                d = os.path.join(root, m["member"])
                done[m["member"]] = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    return done


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet_worker_logs() -> None:
    """Our workers print progress lines; Ray Data's per-shard reads and Ray Train's per-report
    INFO lines (logged under the module's file name, not `ray.train`) would bury them."""
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # internal module moved: only the log volume changes
        pass


def train_fn(cfg: Dict[str, Any]) -> None:
    """Ray Train worker loop, `cfg` built by the workload from the member config: one GBDT member,
    or each of `cfg["members"]` in turn (member-specific keys there, the data's keys in `cfg`)."""
    import ray.train

    quiet_worker_logs()
    ctx = ray.train.get_context()
    members = cfg.get("members")
    names = ", ".join(m["member"] for m in members) if members else cfg["member"]
    t0 = time.perf_counter()
    arrays = _shard_arrays(cfg, "train") + _shard_arrays(cfg, "valid")
    load_s = time.perf_counter() - t0
    if ctx.get_world_rank() == 0:
        print(f"[{names}] worker 0/{ctx.get_world_size()}: {len(arrays[1]):,} train and "
              f"{len(arrays[3]):,} validation rows loaded in {load_s:.1f}s", flush=True)
    if not members:
        _train_member(cfg, arrays, load_s, ctx)
        return
    finished = _finished_members(members)
    shared = {k: v for k, v in cfg.items() if k != "members"}
    for m in members:
        if m["member"] not in finished:
            _train_member({**shared, **m}, arrays, load_s, ctx, subdir=m["member"], finished=finished)
            load_s = 0.0  # loaded once, for the first member


def _train_member(cfg, arrays, load_s: float, ctx, subdir: Optional[str] = None,
                  finished: Optional[Dict[str, Dict[str, bytes]]] = None) -> None:
    kind = cfg["kind"]
    t_start = time.perf_counter()
    start, init_model, history = _restore(kind, subdir)
    reporter = SparseReporter(cfg, start, history, subdir, finished)
    reporter.phases["load_s"] = load_s
    remaining = cfg["num_boost_round"] - start
    if remaining <= 0:
        return
    if kind == "xgboost":
        _train_xgboost(cfg, *arrays, init_model, remaining, reporter)
    else:
        _train_lightgbm(cfg, *arrays, init_model, remaining, reporter, ctx)
    if ctx.get_world_rank() == 0:
        print(f"[{cfg['member']}] worker 0: build + boost {time.perf_counter() - t_start:.1f}s "
              f"({remaining} rounds, {reporter.reports} reports)", flush=True)


def _train_xgboost(cfg, x_train, y_train, x_valid, y_valid, init_model, rounds, reporter) -> None:
    import xgboost as xgb

    types = ["c" if f in cfg["categorical"] else "q" for f in cfg["features"]]
    kw = dict(feature_names=cfg["features"], feature_types=types, enable_categorical=True, nthread=cfg["threads"])
    t0 = time.perf_counter()
    dtrain = xgb.DMatrix(x_train, y_train, **kw)
    dvalid = xgb.DMatrix(x_valid, y_valid, **kw)
    reporter.built(time.perf_counter() - t0)
    budget = ThreadBudget(cfg, reporter)
    params = {"objective": "reg:squarederror", "eval_metric": reporter.metric, "tree_method": "hist",
              "nthread": budget.now(), "seed": cfg["seed"], **cfg["params"]}
    if cfg["use_gpu"]:
        params["device"] = "cuda"

    class Callback(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            value = evals_log["valid"][reporter.metric][-1]
            # With xgb_model=..., epoch restarts at 0: rounds done = resumed + this call's.
            done = reporter.start + epoch + 1
            reporter.after_round(done, value, model.save_model)
            threads = budget.changed(done)
            if threads:
                model.set_param({"nthread": threads})
            return False

    xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], xgb_model=init_model,
              callbacks=[Callback()], verbose_eval=False)


def _train_lightgbm(cfg, x_train, y_train, x_valid, y_valid, init_model, rounds, reporter, ctx) -> None:
    import lightgbm as lgb

    budget = ThreadBudget(cfg, reporter)
    params = {"objective": "regression", "metric": reporter.metric, "num_threads": budget.now(),
              "seed": cfg["seed"], "verbosity": -1, "deterministic": True, **cfg["params"]}
    if ctx.get_world_size() > 1:
        # Each worker holds a disjoint shard already: no LightGBM-side re-partitioning.
        params.update(_lightgbm_network(ctx), tree_learner="data_parallel", pre_partition=True)
    if cfg["use_gpu"]:
        params["device_type"] = "cuda"
    cats = [f for f in cfg["features"] if f in cfg["categorical"]]
    dtrain = lgb.Dataset(x_train, y_train, feature_name=cfg["features"], categorical_feature=cats,
                         free_raw_data=False)
    dvalid = lgb.Dataset(x_valid, y_valid, reference=dtrain)
    t0 = time.perf_counter()

    def mark_built(env):
        # lgb.train constructs the Datasets (after the network is up: bin boundaries are
        # agreed across workers), then boosts: the first iteration's start ends the build.
        if env.iteration == env.begin_iteration:
            reporter.built(time.perf_counter() - t0)

    mark_built.before_iteration = True

    def callback(env):
        value = next(r[2] for r in env.evaluation_result_list if r[0] == "valid")
        done = reporter.start + env.iteration - env.begin_iteration + 1
        reporter.after_round(done, value, env.model.save_model)
        threads = budget.changed(done)
        if threads:
            env.model.reset_parameter({"num_threads": threads})

    booster = lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dvalid], valid_names=["valid"],
                        init_model=init_model, callbacks=[mark_built, callback])
    if "machines" in params:
        booster.free_network()  # closes the sockets; the next member listens on fresh ports


# Whether this worker process has already opened a LightGBM network (a Train worker is a
# dedicated actor process, so this lives exactly as long as the worker group).
_network_used = False


def _lightgbm_network(ctx) -> Dict[str, Any]:
    """LightGBM's network parameters for this member. The first LightGBM member of a worker
    group takes the ports Ray Train chose; a later one (a slot training members in turn) picks
    fresh ones, because the sockets the previous member closed linger in TIME_WAIT and LightGBM
    binds without SO_REUSEADDR ("Binding port ... failed", seen in CI). The new ports are
    exchanged over XGBoost's collective, which the slot's backend keeps up for the whole run."""
    global _network_used
    from ray.train.lightgbm import get_network_params

    params = get_network_params()
    if _network_used:
        params["local_listen_port"] = port = _free_port()
        params["machines"] = _swap_ports(params["machines"], _allgather_port(ctx, port))
    _network_used = True
    return params


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _allgather_port(ctx, port: int) -> List[int]:
    import xgboost.collective as collective

    slots = np.zeros(ctx.get_world_size(), dtype=np.int64)
    slots[ctx.get_world_rank()] = port
    return [int(p) for p in collective.allreduce(slots, collective.Op.SUM)]


def _swap_ports(machines: str, ports: List[int]) -> str:
    """"ip0:p0,ip1:p1" with each rank's port replaced (IPv6 hosts keep their brackets)."""
    hosts = [m.rsplit(":", 1)[0] for m in machines.split(",")]
    return ",".join(f"{h}:{p}" for h, p in zip(hosts, ports))
