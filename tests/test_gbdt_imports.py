"""The boosting libraries are imported without scikit-learn (training/gbdt/kinds/__init__.py's
import_libraries), by the driver's parameter checks and by every process that trains, and they
still train and predict.

Each case runs in a fresh Python process, as the CLI's driver and every fit's Train worker are."""

import json
import subprocess
import sys

from tests.conftest import REPO

TRAIN = """
import json, sys
import numpy as np
from training.gbdt import kinds
if sys.argv[1] == "sklearn first":
    import sklearn  # noqa: F401  (a process that uses it already)
kinds.import_libraries(["xgboost", "lightgbm"])
hidden = "sklearn" not in sys.modules
import lightgbm as lgb, xgboost as xgb
rng = np.random.default_rng(0)
x = rng.normal(size=(500, 4)).astype(np.float32); y = 3 * x[:, 0] + rng.normal(size=500)
bst = xgb.train({"nthread": 1, "max_depth": 3}, xgb.DMatrix(x, y), 20)
gbm = lgb.train({"verbosity": -1, "num_threads": 1}, lgb.Dataset(x, y), 20)
fits = [float(np.corrcoef(y, m.predict(d))[0, 1]) for m, d in ((bst, xgb.DMatrix(x)), (gbm, x))]
import sklearn.linear_model  # noqa: F401  (imports as usual afterwards)
print(json.dumps({"hidden": hidden, "fits": fits, "sklearn_after": "sklearn" in sys.modules}))
"""


def _run(script: str, arg: str) -> dict:
    """The JSON line a script prints, run in a fresh Python process."""
    out = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, cwd=REPO,
                         check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gbdt_libraries_train_and_predict_without_sklearn_which_imports_as_usual_afterwards():
    r = _run(TRAIN, "fresh")
    assert r["hidden"], "scikit-learn was imported with the boosting libraries"
    assert min(r["fits"]) > 0.9, r["fits"]
    assert r["sklearn_after"]


def test_a_process_that_has_sklearn_keeps_it():
    r = _run(TRAIN, "sklearn first")
    assert not r["hidden"] and min(r["fits"]) > 0.9 and r["sklearn_after"]


CHECK = """
import json, sys
from training import config
cfg = config.load(["workload=" + sys.argv[1]])   # the CLI's config load, its parameter checks included
print(json.dumps({"sklearn": "sklearn" in sys.modules,
                  "xgboost_sklearn": sys.modules["xgboost"].compat.SKLEARN_INSTALLED}))
"""


def test_the_drivers_parameter_checks_leave_sklearn_out():
    for workload in ("ensemble", "tune"):
        assert _run(CHECK, workload) == {"sklearn": False, "xgboost_sklearn": False}
