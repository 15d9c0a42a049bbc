"""MLflow tracking: one parent run per pipeline run, one nested run per alternating phase.

``store`` (where runs are kept, one experiment per dataset), ``names`` (run names, param and
metric keys), ``plots`` (the training curve), ``logged`` (what every run shares: dataset input,
served model), ``pipeline_run`` (a finished pipeline run), ``model_folder`` (a model the
pipeline did not train, scored and logged).
"""

from idgenrec.layout import PipelineFiles, find_project_root
from idgenrec.provenance import code_version
from idgenrec.tracking.logged import LoggedRun, interactions_frame, log_dataset
from idgenrec.tracking.model_folder import log_model_folder
from idgenrec.tracking.names import flatten_params, metric_key, model_folder_run_name, numeric_metrics, run_name
from idgenrec.tracking.pipeline_run import log_phase_runs, log_pipeline_run
from idgenrec.tracking.plots import curve_points, log_training_curve_plot
from idgenrec.tracking.store import (
    STORE_DIR,
    STORE_FILE,
    TRACKING_URI_VARIABLE,
    configure_tracking,
    default_tracking_uri,
    ensure_experiment,
    experiment_name,
)

__all__ = [
    "STORE_DIR", "STORE_FILE", "TRACKING_URI_VARIABLE", "LoggedRun", "PipelineFiles", "code_version",
    "configure_tracking", "curve_points", "default_tracking_uri", "ensure_experiment", "experiment_name",
    "find_project_root", "flatten_params", "interactions_frame", "log_dataset", "log_model_folder",
    "log_phase_runs", "log_pipeline_run", "log_training_curve_plot", "metric_key", "model_folder_run_name",
    "numeric_metrics", "run_name",
]
