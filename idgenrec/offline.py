"""Offline-safe defaults, applied before transformers / mlflow / prefect are imported.

This machine (and many production hosts) cannot reach model hubs or telemetry
endpoints; a hub look-up would otherwise retry for ~23 s before failing. Users who can
reach the hub override these by exporting the variables themselves.
"""

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
