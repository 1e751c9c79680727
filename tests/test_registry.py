"""Registration (training/runtime/tracking.register) against a real MLflow SQLite store: a
version that fails leaves no empty registered model behind, and never deletes the user's."""

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.runtime import tracking


@pytest.fixture
def store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("registry"))
    yield client, run.info.run_id
    mlflow.set_tracking_uri(None)


def test_a_failed_first_registration_leaves_no_empty_registered_model(store):
    client, run_id = store
    # MLflow creates the registered model, then finds no model in the run for its version.
    with pytest.raises(MlflowException, match="logged_model"):
        tracking.register(f"runs:/{run_id}/model", "demand")
    assert client.search_registered_models() == []


def test_a_failed_registration_keeps_a_registered_model_that_was_there_before(store):
    client, run_id = store
    client.create_registered_model("demand", description="the team's")
    with pytest.raises(MlflowException, match="logged_model"):
        tracking.register(f"runs:/{run_id}/model", "demand")
    assert [m.description for m in client.search_registered_models()] == ["the team's"]


def test_a_logged_models_requirements_name_releases_an_index_serves():
    """torch installed from a local CPU build is `2.13.0+cpu`; the model asks for `torch==2.13.0`,
    which a serving host resolves from its own index (a CUDA build on a GPU node)."""
    from importlib.metadata import version

    torch, pandas = version("torch"), version("pandas")
    assert tracking.pinned(["torch", "pandas"]) == [f"torch=={torch.split('+')[0]}", f"pandas=={pandas}"]
