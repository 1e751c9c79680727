"""The registered GBDT model: plots, the MLflow pyfunc model with only the code it runs, registration.

The model's code is the ensemble, the feature pipeline and the GBDT kinds (MODEL_CODE), copied
into the model as a package of its own: loading it imports numpy, pandas, pyarrow, SciPy, MLflow
(skinny) and the boosting libraries it uses (its requirements.txt), never Ray, Hydra or the rest of this
package.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from training.gbdt import kinds
from training.gbdt.slots import METRIC, TrainedMember
from training.runtime.tracking import pinned

if TYPE_CHECKING:
    from training.data.prepare import PreparedData
    from training.gbdt.config import MemberConfig
    from training.gbdt.ensemble import EnsembleModel

PACKAGE = Path(__file__).resolve().parents[1]
# What the registered model imports, relative to the package (its __init__.py files come along).
MODEL_CODE = ("errors.py", "data/columns.py", "data/features.py", "gbdt/ensemble.py", "gbdt/kinds")
# mlflow-skinny: the pyfunc flavour and the scoring server (`mlflow models serve`), without the
# tracking server, the UI and their dependencies.
BASE_REQUIREMENTS = ("pandas", "numpy", "pyarrow", "scipy", "mlflow-skinny")


def requirements(kind_names: List[str]) -> List[str]:
    """Pinned pip requirements of a model whose members are of these kinds."""
    libs = sorted({kinds.get(k).requirement for k in kind_names})
    return pinned((*libs, *BASE_REQUIREMENTS))


def model_code(dest: Path) -> Path:
    """A copy of the model's code as package `training` under `dest` (for MLflow's code_paths)."""
    root = dest / PACKAGE.name
    for rel in MODEL_CODE:
        src = PACKAGE / rel
        for parent in [PACKAGE, *[PACKAGE / p for p in Path(rel).parents if str(p) != "."]]:
            init = parent / "__init__.py"
            (root / init.relative_to(PACKAGE)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(init, root / init.relative_to(PACKAGE))
        if src.is_dir():
            shutil.copytree(src, root / rel, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copyfile(src, root / rel)
    return root


def warm_imports() -> None:
    """What the model logging imports (matplotlib, MLflow's pyfunc flavour and signatures), and
    the map of installed packages that MLflow's requirement check builds on first use: done beside
    Ray's start (runtime/startup.py), so the tracking phase does not wait for it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(requirements(kinds.names()))  # the check log_model runs again


def start_children(members: List[MemberConfig]) -> Dict[str, str]:
    """A nested MLflow run per member, RUNNING while it trains (its workers log its validation
    curve live): member name -> run id."""
    from training.runtime import tracking

    return {m.name: tracking.start_child(m.name, {"kind": m.kind, "num_boost_round": m.num_boost_round,
                                                   "early_stopping_rounds": m.early_stopping_rounds,
                                                   **m.params}, tags={"kind": m.kind})
            for m in members}


def finish_children(children: Dict[str, str], trained: List[TrainedMember], metrics, weights) -> None:
    """Each member's run ends with its final metrics and the curve points not logged live."""
    from training.runtime import tracking

    for t in trained:
        final = {f"valid_{k}": v for k, v in metrics[t.name].items()}
        final.update(train_seconds=t.seconds, ensemble_weight=weights[t.name], started_at=t.started_at,
                     finished_at=t.finished_at, best_iteration=t.rounds, rounds_boosted=t.boosted)
        tracking.finish_child(children[t.name], f"valid_{METRIC}_curve", t.history, final)


def signature(model: EnsembleModel, example):
    """Every raw feature column the model reads, required, of any type: the model's own pipeline
    converts and checks them (pyfunc.check_rows). Types inferred from a few example rows would
    refuse what the model handles, an integer column with a missing value (float64 in pandas,
    null in JSON) or a number sent for a float column, and MLflow's cast would turn a JSON null
    in a boolean column into False."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), c) for c in model.pipeline.cols.features])
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, model.predict(example)).outputs)


def log_pyfunc(model: EnsembleModel, example, kind_names: List[str]):
    """The pyfunc model (its code, the ensemble, the signature, the requirements) into the active
    run, as `model`; MLflow's ModelInfo."""
    import mlflow

    from training.gbdt import pyfunc

    with tempfile.TemporaryDirectory() as d:
        model_dir = model.save(Path(d) / "ensemble")
        with warnings.catch_warnings():  # MLflow's hint about integer columns in the example: they are what they are
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.pyfunc.log_model(name="model", python_model=pyfunc.__file__,
                                           artifacts={"ensemble": str(model_dir)},
                                           code_paths=[str(model_code(Path(d) / "code"))],
                                           signature=signature(model, example), input_example=example,
                                           pip_requirements=requirements(kind_names))


def log_model(model: EnsembleModel, data: PreparedData, trained: List[TrainedMember], title: str) -> str:
    """Plots and the pyfunc model into the active run; the logged model's URI (the workload
    registers it once its run has finished: runtime/run.Run.register_when_finished)."""
    import mlflow

    from training.runtime import report

    with tempfile.TemporaryDirectory() as d:
        report.importance_plot(model.importance(), f"{d}/feature_importance.png",
                               f"{title}: feature importance (gain)")
        report.curves_plot({t.name: t.history for t in trained}, METRIC, f"{d}/validation_curves.png")
        mlflow.log_artifact(f"{d}/feature_importance.png", "plots")
        mlflow.log_artifact(f"{d}/validation_curves.png", "plots")
    return log_pyfunc(model, data.example[data.pipeline.cols.features], sorted({t.kind for t in trained})).model_uri
