"""The registered model: an MLflow pyfunc around a saved IDGenRecModel folder.

``mlflow models serve -m models:/idgenrec-<dataset>@champion --env-manager local`` answers
``POST /invocations`` with recommendations (see pyfunc.py for the request format).
"""

from idgenrec.serving.pyfunc import (
    MODEL_ARTIFACT,
    RecommenderPyfunc,
    input_example,
    log_recommender_model,
    model_signature,
    parse_requests,
)

__all__ = [
    "MODEL_ARTIFACT",
    "RecommenderPyfunc",
    "input_example",
    "log_recommender_model",
    "model_signature",
    "parse_requests",
]
