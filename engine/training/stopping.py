"""When a fold stops training: its epochs, early stopping on the validation figure
``--eval-metric`` names (the loss by default, as in docs/model.md "Data and training
protocol"), and its time budget."""

from __future__ import annotations

import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.metrics import compute_metrics
from luvnet.engine.training.settings import EVAL_METRICS, FitSettings
from luvnet.engine.training.state import Progress
from luvnet.engine.training.validation import Validation


def stop_reason(progress: Progress, settings: FitSettings, elapsed_s: float) -> str | None:
    """Why this fold is finished under the current settings, or None to keep training."""
    if progress.epoch >= settings.epochs:
        return "max_epochs"
    if progress.best_score is not None and progress.bad_epochs >= settings.patience:
        return "early_stop"
    if settings.budget_s is not None and elapsed_s >= settings.budget_s:
        return "budget"
    return None


def _no_auc(what: str) -> LuvnetError:
    return LuvnetError(
        f"{what}: --eval-metric macro_auc: no pattern has clips both with and without it, so "
        "no AUC is defined; use --eval-metric loss (or a split whose validation patients show "
        "and lack a pattern)"
    )


def require_auc(labels: np.ndarray, what: str) -> None:
    """Refuse ``--eval-metric macro_auc`` before training when ``labels`` (float [N, P] clip
    labels of a validation set, NaN = unknown) leave every pattern's AUC undefined.

    Raises:
        LuvnetError: no pattern has known positive and negative clips; ``what`` names the set.
    """
    scores = np.zeros_like(labels)  # any scores: whether an AUC is defined is the labels'
    names = [str(k) for k in range(labels.shape[1])]
    if compute_metrics(labels, scores, [None] * len(names), names)["macro_auc"] is None:
        raise _no_auc(what)


def validation_score(validation: Validation, metric: str, *, label: str) -> float:
    """The figure ``metric`` takes from one validation pass; ``label`` names the fold.

    Raises:
        LuvnetError: ``macro_auc`` where no pattern's AUC is defined (refused before training
            by :func:`require_auc`, so only for a validation set that lost its labels).
    """
    if metric == "loss":
        return validation.loss
    assert metric == "macro_auc", metric  # TrainSettings.check refused any other
    value = validation.metrics["macro_auc"]
    if value is None:
        raise _no_auc(f"{label} validation set")
    return float(value)


def record_validation(progress: Progress, score: float, metric: str) -> bool:
    """Early-stopping bookkeeping for this epoch's ``metric`` figure; True when it is the best
    so far (lower for the loss, higher for the AUC; a tie is no gain)."""
    assert metric in EVAL_METRICS, metric  # TrainSettings.check refused any other
    best = progress.best_score
    improved = best is None or (score < best if metric == "loss" else score > best)
    if improved:
        progress.best_score, progress.best_epoch, progress.bad_epochs = score, progress.epoch, 0
    else:
        progress.bad_epochs += 1
    return improved
