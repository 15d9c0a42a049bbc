"""A trained SASRec on disk: {config.json, weights.safetensors, timings.json}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from idgenrec.atomic import atomic_directory
from idgenrec.baselines.sasrec.network import SASRecNetwork
from idgenrec.baselines.sasrec.training import EpochLog, TrainingLog, pick_device
from idgenrec.config import SASRecConfig

if TYPE_CHECKING:
    from idgenrec.baselines.sasrec.recommender import SASRecRecommender

FORMAT = "idgenrec-sasrec/1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
# The training log's seconds, beside the config rather than in it: .dvcignore keeps this file
# out of the folder's DVC hash, so retraining to the same weights writes the same folder.
TIMINGS_FILE = "timings.json"


def save(model: "SASRecRecommender", folder: str | Path) -> None:
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.network.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        log = model.log.as_dict()
        timings = {"seconds": log.pop("seconds"), "epochs": [epoch.pop("seconds") for epoch in log["epochs"]]}
        payload = {"format": FORMAT, "num_items": model.num_items, "config": model.config.model_dump(mode="json"), "training": log}
        (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")


def load(folder: str | Path, device: str | None = None) -> "SASRecRecommender":
    """Rebuild a saved model; errors name the file that is missing or corrupt."""
    from safetensors.torch import load_file

    from idgenrec.baselines.sasrec.recommender import SASRecRecommender

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; not a saved SASRec model (run `idgenrec baseline sasrec`)")
    try:
        payload = json.loads(config_path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"format is {payload.get('format')!r}, expected {FORMAT!r}")
        config = SASRecConfig.model_validate(payload["config"])
        num_items = int(payload["num_items"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{config_path}: corrupt or not a SASRec model config: {err}") from None
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error type for truncated or garbled files
        raise ValueError(f"{weights_path}: corrupt weights file: {err}") from None
    network = SASRecNetwork(num_items, config)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights_path}: weights do not match {config_path} ({num_items} items): {err}") from None
    model = SASRecRecommender(network, config, num_items, pick_device(device or config.device))
    log = payload.get("training", {})
    timings = _load_timings(folder / TIMINGS_FILE, len(log.get("epochs", [])))
    model.log = TrainingLog(
        # `seconds` inside an entry: the older format kept the timings in config.json; such folders still load
        epochs=[EpochLog(**{"seconds": seconds, **entry}) for entry, seconds in zip(log.get("epochs", []), timings["epochs"])],
        best_epoch=log.get("best_epoch", 0),
        seconds=log.get("seconds", timings["seconds"]),
    )
    return model


def _load_timings(path: Path, num_epochs: int) -> dict:
    """The log's seconds; zeros where the file is missing (``dvc checkout`` skips it) or does not fit."""
    zeros = {"seconds": 0.0, "epochs": [0.0] * num_epochs}
    try:
        timings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return zeros
    if not isinstance(timings, dict) or len(timings.get("epochs", ())) != num_epochs:
        return zeros
    return timings
