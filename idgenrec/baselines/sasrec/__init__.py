"""SASRec baseline: a causal transformer over the item history, cross-entropy over the full catalogue.

``network`` (the transformer), ``training`` (windows, the epoch loop, selection on validation),
``storage`` (the saved folder), ``recommender`` (:class:`SASRecRecommender`, the evaluated model).
"""

from idgenrec.baselines.sasrec.network import IGNORE, PAD, SASRecNetwork, dropout
from idgenrec.baselines.sasrec.recommender import SASRecRecommender
from idgenrec.baselines.sasrec.storage import CONFIG_FILE, FORMAT, TIMINGS_FILE, WEIGHTS_FILE
from idgenrec.baselines.sasrec.training import EpochLog, TrainingLog, pick_device, training_windows

__all__ = [
    "CONFIG_FILE", "FORMAT", "IGNORE", "PAD", "TIMINGS_FILE", "WEIGHTS_FILE", "EpochLog", "SASRecNetwork",
    "SASRecRecommender", "TrainingLog", "dropout", "pick_device", "training_windows",
]
