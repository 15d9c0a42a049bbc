"""Entry file for MLflow's models-from-code: MLflow copies this file into the logged model
and executes it at load time. Not imported by the package (it has a side effect)."""

import mlflow

from idgenrec.serving.pyfunc import RecommenderPyfunc

mlflow.models.set_model(RecommenderPyfunc())
