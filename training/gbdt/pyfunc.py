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
        return pd.Series(self.model.predict(model_input), name="prediction")


mlflow.models.set_model(EnsemblePyfunc())
