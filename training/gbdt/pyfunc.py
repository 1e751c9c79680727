"""The MLflow pyfunc wrapper: `mlflow.pyfunc.load_model(uri).predict(raw_rows_dataframe)`.

Logged as "models from code" (this file is the model's code; no pickled Python object).
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from training.gbdt.ensemble import EnsembleModel

        self.model = EnsembleModel.load(context.artifacts["ensemble"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        check_rows(self.model.pipeline.cols, model_input)
        # The caller's index: `rows["pred"] = model.predict(rows)` lines up for any slice of a frame.
        return pd.Series(self.model.predict(model_input), index=model_input.index, name="prediction")


def check_rows(cols, rows: pd.DataFrame) -> None:
    """Rows sent for prediction: a value that is no number in a numeric feature, or a number
    where the timestamp goes (it would be read as nanoseconds since 1970), is the caller's
    mistake (HTTP 400 from a scoring server); training, reading dirty rows, takes such values as
    missing instead. Missing values themselves are fine, as in training; infinite ones are
    refused, as training refuses them (XGBoost fails on them: a 500, not the caller's 400)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    for c in [c for c in cols.numeric if c in rows.columns]:
        values = pd.to_numeric(rows[c], errors="coerce")
        bad = rows[c].notna() & values.isna()
        if bad.any():
            raise MlflowException(f"feature '{c}' takes numbers; got {rows[c][bad].iloc[0]!r}", INVALID_PARAMETER_VALUE)
        infinite = values.abs() == float("inf")
        if infinite.any():
            raise MlflowException(f"feature '{c}' takes finite numbers or missing values; got "
                                  f"{float(values[infinite].iloc[0])}", INVALID_PARAMETER_VALUE)
    t = cols.timestamp
    if t and t in rows.columns and pd.api.types.is_numeric_dtype(rows[t]) and not pd.api.types.is_bool_dtype(rows[t]):
        raise MlflowException(f"feature '{t}' takes dates and times (ISO-8601 text or datetimes), not numbers like "
                              f"{rows[t].iloc[0]!r}", INVALID_PARAMETER_VALUE)


mlflow.models.set_model(EnsemblePyfunc())
