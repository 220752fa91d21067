"""Optional MLflow tracking of a run: the config as params, the metrics, the report and adapter as artifacts."""

from __future__ import annotations

from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key, value in obj.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): obj}


def log_run(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> str:
    """Log to `tracking.mlflow_uri`; returns the MLflow run id."""
    try:
        import mlflow
    except ImportError as exc:
        raise UserError("tracking.mlflow_uri is set but MLflow is not installed: pip install 'distill[tracking]'"
                        ) from exc
    mlflow.set_tracking_uri(config.tracking.mlflow_uri)
    mlflow.set_experiment(config.tracking.experiment)
    numbers = {k: v for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with mlflow.start_run(run_name=config.name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(config.model_dump(mode="json")).items()})
        mlflow.log_metrics(numbers)
        for path in (layout.compare.metrics, layout.compare.report_html, layout.compare.report_md):
            mlflow.log_artifact(str(path), artifact_path="compare")
        mlflow.log_artifacts(str(layout.train.adapter), artifact_path="adapter")
        return run.info.run_id
