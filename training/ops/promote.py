"""`python -m training.ops.promote [options] [OVERRIDES...]`: the champion/challenger promotion gate.

Scores the new model version (the challenger) and the version behind the registry alias
(`champion` by default) on the same held-out rows, moves the alias only when the challenger
is better by `promote.margin`, and records the decision as tags on both versions. The first
version of a model becomes champion. Works for any workload that registers an MLflow pyfunc
predicting from a DataFrame of raw rows; the overrides are those of the training run, so the
held-out rows are the validation split of the same data config (or `promote.data_path`).

Exit codes: 0 promoted, 3 kept (the champion stays), 2 bad input, 1 any other error, 130
interrupted (Ctrl-C). The decision's tags and the alias are written together, the alias last:
a Ctrl-C while they are written lets them finish, prints the decision, and then exits 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from training.settings import PROMOTE_METRICS, PromoteConfig
from training.config import Config
from training.ops.held_out import held_out
from training import errors
from training.errors import UserError
from training.runtime.interrupts import HeldInterrupt, held_interrupt
from training.runtime.ray_lifetime import stops_ray_it_started

log = logging.getLogger(__name__)

EXIT_PROMOTED = 0
EXIT_KEPT = 3
TAG = "promotion"


class StoppedWhileRecording(KeyboardInterrupt):
    """A second Ctrl-C while the decision was written: part of it may be in the registry."""


RECORDED_IN_FULL = "the decision above was recorded in full first"


def half_recorded(alias: str) -> str:
    return f"the decision may be half recorded: check the alias '{alias}' and the {TAG}.* tags of both versions"


@dataclass
class Decision:
    model: str
    challenger: str
    champion: Optional[str]                 # the version behind the alias before the gate
    promoted: bool
    metric: str
    scores: Dict[str, float] = field(default_factory=dict)  # version -> score on the held-out rows
    reason: str = ""
    interrupted: bool = False               # Ctrl-C came while the decision was recorded (in full)

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.promoted else EXIT_KEPT

    def line(self) -> str:
        verdict = "promoted" if self.promoted else "kept"
        return f"promotion gate: {self.model} v{self.challenger} {verdict}: {self.reason}"


# --- scoring and the decision -------------------------------------------------------------

def score(model_uri: str, rows: pd.DataFrame, target: str, metric: str) -> float:
    import mlflow.pyfunc

    from training.gbdt.metrics import regression_metrics

    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    missing = [c for c in schema.required_input_names() if c not in rows.columns] if schema is not None else []
    if missing:
        raise UserError(f"held-out data lacks columns {model_uri} takes: {', '.join(missing)}")
    features = [c for c in schema.input_names() if c in rows.columns] if schema is not None else \
        [c for c in rows.columns if c != target]
    pred = np.asarray(model.predict(rows[features]), dtype=np.float64).reshape(-1)
    return regression_metrics(rows[target].to_numpy(np.float64), pred)[metric]


def improvement(champion: float, challenger: float, metric: str, relative: bool) -> float:
    """How much better the challenger is (positive = better), absolute or as a fraction of the champion."""
    delta = challenger - champion if PROMOTE_METRICS[metric] else champion - challenger
    return delta / abs(champion) if relative and champion != 0 else delta


def _numbers_as_floats(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """A decimal target (money, in parquet's decimal type) reaches pandas as Decimal objects;
    training reads it as numbers, and so does the gate."""
    col = rows[target]
    if col.dtype != object:
        return rows
    as_numbers = pd.to_numeric(col, errors="coerce")
    return rows.assign(**{target: as_numbers}) if as_numbers.notna().sum() == col.notna().sum() else rows


def gate(client, name: str, version: str, rows: pd.DataFrame, target: str, cfg: PromoteConfig,
         evaluated_on: str) -> Decision:
    """Compare, move the alias if the challenger wins, tag both versions; the Decision."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise UserError(f"model version {name}/{version} does not exist in the registry") from None
    if target not in rows.columns:
        raise UserError(f"held-out data has no target column '{target}' (columns: {', '.join(rows.columns)})")
    rows = _numbers_as_floats(rows, target)
    if not pd.api.types.is_numeric_dtype(rows[target]):
        raise UserError(f"held-out data's target '{target}' has type {rows[target].dtype}; a numeric column is "
                        "required")
    # Rows without a label are left out, as training leaves them out: one NaN would make every
    # score NaN, the first version champion on rmse=nan, and every later challenger "kept".
    rows = rows[rows[target].notna()]
    if rows.empty:
        raise UserError(f"held-out data ({evaluated_on}) has no rows with a value in target '{target}'")
    # Read from the model's aliases, not as "the alias lookup failed": a registry that fails to
    # answer must not make the challenger champion without a comparison.
    behind_alias = client.get_registered_model(name).aliases.get(cfg.alias)
    champion: Optional[str] = None if behind_alias is None else str(behind_alias)  # None: the first becomes champion
    d = Decision(name, str(version), champion, False, cfg.metric)
    d.scores[d.challenger] = score(f"models:/{name}/{version}", rows, target, cfg.metric)
    if champion is None:
        d.promoted, d.reason = True, f"no '{cfg.alias}' yet; {cfg.metric}={d.scores[d.challenger]:.6g}"
    elif champion == d.challenger:  # nothing to decide: the tags that say why it is champion stay
        d.reason = f"v{champion} is already '{cfg.alias}'"
        return d
    else:
        d.scores[champion] = score(f"models:/{name}/{champion}", rows, target, cfg.metric)
        gain = improvement(d.scores[champion], d.scores[d.challenger], cfg.metric, cfg.relative)
        shown = (lambda x: f"{100 * x:.3g}%") if cfg.relative else (lambda x: f"{x:.6g}")
        d.promoted = gain > cfg.margin
        d.reason = (f"{cfg.metric} {d.scores[d.challenger]:.6g} vs champion v{champion} {d.scores[champion]:.6g}: "
                    f"improvement {shown(gain)} {'>' if d.promoted else '<='} margin {shown(cfg.margin)}")
    # Another gate (a scheduled run's, a manual one) may have moved the alias while this one
    # scored: writing now would replace a champion this challenger was never compared with.
    now = client.get_registered_model(name).aliases.get(cfg.alias)
    if (None if now is None else str(now)) != champion:
        raise RuntimeError(f"the alias '{cfg.alias}' moved to v{now} while the gate scored v{d.challenger} against "
                           f"{'v' + champion if champion else 'no champion'}; nothing was recorded: run the gate again")
    try:
        with held_interrupt():  # the alias and the tags that say why: both or neither
            _tag(client, d, cfg, evaluated_on, len(rows))
            if d.promoted:  # last: what serving follows moves only once the record is whole
                client.set_registered_model_alias(name, cfg.alias, d.challenger)
    except HeldInterrupt:
        d.interrupted = True
    except KeyboardInterrupt:  # a second Ctrl-C, not held: a write that hangs can still be stopped
        raise StoppedWhileRecording from None
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"the registry refused a write of the decision ({first}); the alias '{cfg.alias}' did "
                           f"not move; the {TAG}.* tags of v{d.challenger} may be partly written") from None
    return d


def _tag(client, d: Decision, cfg: PromoteConfig, evaluated_on: str, rows: int) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"metric": d.metric, "margin": f"{cfg.margin}{' (relative)' if cfg.relative else ''}",
              "alias": cfg.alias, "evaluated_on": f"{evaluated_on} ({rows} rows)", "time": when}
    mine = {**common, "decision": "promoted" if d.promoted else "kept", "reason": d.reason,
            "score": f"{d.scores[d.challenger]:.10g}", "champion_version": d.champion or "none"}
    if d.champion and d.champion in d.scores:
        mine["champion_score"] = f"{d.scores[d.champion]:.10g}"
    for k, v in mine.items():
        client.set_model_version_tag(d.model, d.challenger, f"{TAG}.{k}", str(v)[:5000])
    if d.champion and d.champion != d.challenger:
        theirs = {**common, "challenger_version": d.challenger, "score": f"{d.scores[d.champion]:.10g}",
                  "challenger_score": f"{d.scores[d.challenger]:.10g}",
                  "result": "replaced" if d.promoted else "defended"}
        for k, v in theirs.items():
            client.set_model_version_tag(d.model, d.champion, f"{TAG}.last_challenge.{k}", str(v)[:5000])


# --- entry points --------------------------------------------------------------------------

def after_run(cfg: Config, model_uri: Optional[str], valid_raw=None) -> Optional[Decision]:
    """The hook at the end of a training run: gate the version it just registered."""
    from mlflow.tracking import MlflowClient

    if not cfg.promote.enabled or not model_uri:
        return None
    name, version = model_uri.removeprefix("models:/").rsplit("/", 1)
    try:
        if cfg.promote.data_path or valid_raw is None:
            rows, where = held_out(cfg)
        else:
            d = cfg.data
            rows = valid_raw.to_pandas()
            where = f"{d.path} validation split (fraction {d.validation_fraction}, seed {d.split_seed})"
        decision = gate(MlflowClient(), name, version, rows, cfg.data.target, cfg.promote, where)
    except StoppedWhileRecording:
        raise KeyboardInterrupt(f"{model_uri} is registered; {half_recorded(cfg.promote.alias)}") from None
    except KeyboardInterrupt:  # the run itself is complete: rerunning it would register another version
        raise KeyboardInterrupt(f"{model_uri} is registered; the promotion gate stopped before it recorded anything "
                                f"(python -m training.ops.promote --model {name} --version {version} with the run's "
                                "overrides gates it)") from None
    print(decision.line(), flush=True)
    if decision.interrupted:
        raise KeyboardInterrupt(f"{model_uri} is registered; {RECORDED_IN_FULL}")
    return decision


def after_finished_run(cfg: Config, model_uri: str) -> Optional[Decision]:
    """A rerun of a run that had registered `model_uri` (runtime.run.FinishedBefore): the gate,
    if it is on and never judged that version (a RayJob retried after its gate failed)."""
    from mlflow.tracking import MlflowClient

    if not cfg.promote.enabled:
        return None
    name, version = model_uri.removeprefix("models:/").rsplit("/", 1)
    if f"{TAG}.decision" in MlflowClient().get_model_version(name, version).tags:
        return None
    return after_run(cfg, model_uri)


def parser() -> argparse.ArgumentParser:
    ap = errors.ArgumentParser(
        prog="python -m training.ops.promote",
        description="Promote a registered model version to the champion alias only if it beats the current "
                    "champion on the same held-out rows. Positional arguments are the training run's Hydra "
                    "overrides (data, tracking, workload, promote.*).",
        epilog="exit codes: 0 promoted, 3 kept, 2 bad input, 1 other error, 130 interrupted")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--model", help="registered model name (default: workload.registered_model_name)")
    ap.add_argument("--version", help="challenger version (default: the model's newest version)")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    from training import config
    from training.runtime import report, tracking

    report.setup_logging()
    args = parser().parse_args(argv)
    # Ray Data may start a local Ray for the split; one the caller already runs is left up.
    with stops_ray_it_started():
        try:
            cfg = config.load(list(args.overrides))
            name = args.model or getattr(cfg.workload, "registered_model_name", None)
            if not name:
                raise UserError("no model name: pass --model or a workload with registered_model_name")
            tracking.setup(cfg.tracking)
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            version = args.version or _newest(client, name)
            rows, where = held_out(cfg)
            decision = gate(client, name, version, rows, cfg.data.target, cfg.promote, where)
            print(decision.line())
            if decision.interrupted:
                return errors.show(KeyboardInterrupt(RECORDED_IN_FULL))
            return decision.exit_code
        except StoppedWhileRecording as exc:
            return errors.show(exc, half_recorded(cfg.promote.alias))
        except KeyboardInterrupt as exc:  # Ctrl-C before the decision: nothing was written
            return errors.show(exc, "nothing was recorded and the alias did not move")
        except Exception as exc:  # bad input, registry or model loading failures: one line, non-zero
            return errors.show(exc)


def _newest(client, name: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise UserError(f"registered model '{name}' has no versions (train with workload.register=true first)")
    return str(max(int(v.version) for v in versions))


if __name__ == "__main__":
    sys.exit(main())
