"""The training curve as MLflow metrics by step and as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mlflow


def curve_points(records: Sequence[Mapping], curve_key: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) per record, as in metrics/training_curve.json: the recommender's loss, the
    ID phase's loss (a different objective, kept apart) and the validation selection metric."""
    points = []
    for step, record in enumerate(records, start=1):
        loss_name = "id_phase_loss" if record.get("phase") == "ids" else "recommender_loss"
        values = {loss_name: record.get("train_loss"), curve_key: record.get(curve_key)}
        points.append((step, {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}))
    return points


def log_training_curve_plot(records: Sequence[Mapping], curve_key: str, artifact_file: str) -> None:
    """Losses and the validation selection metric per epoch, phase boundaries dashed, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    points = curve_points(records, curve_key)
    fig = Figure(figsize=(8, 6))
    loss_ax, metric_ax = fig.subplots(2, 1, sharex=True)
    for ax, key, style in (
        (loss_ax, "recommender_loss", "o-"), (loss_ax, "id_phase_loss", "s"), (metric_ax, curve_key, "o-"),
    ):
        series = [(step, values[key]) for step, values in points if key in values]
        if series:
            ax.plot(*zip(*series), style, label=key.replace("_", " "))
    loss_ax.set_ylabel("train loss")
    loss_ax.legend()
    metric_ax.set_ylabel(curve_key)
    for step, (before, after) in enumerate(zip(records, records[1:]), start=1):
        if before.get("phase_index") != after.get("phase_index"):
            for ax in (loss_ax, metric_ax):
                ax.axvline(step + 0.5, color="grey", linestyle="--", linewidth=0.8)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    metric_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    metric_ax.set_xlabel("epoch (all phases, in order; dashed: next phase)")
    fig.suptitle("IDGenRec training curve")
    fig.tight_layout()
    mlflow.log_figure(fig, artifact_file)
