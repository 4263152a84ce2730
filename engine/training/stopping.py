"""When a fold stops training: its epochs, early stopping on the validation figure
``--eval-metric`` names (the loss by default, as in docs/model.md "Data and training
protocol"), and its time budget."""

from __future__ import annotations

from luvnet.engine.errors import LuvnetError
from luvnet.engine.training.settings import FitSettings
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


def validation_score(validation: Validation, metric: str, *, label: str, epoch: int) -> float:
    """The figure ``metric`` (one of settings.EVAL_METRICS) takes from one validation pass.

    Raises:
        LuvnetError: ``macro_auc`` where no pattern has validation clips both with and
            without it, so no AUC is defined; ``label`` and ``epoch`` (0-based) name the pass.
    """
    if metric == "loss":
        return validation.loss
    value = validation.metrics["macro_auc"]
    if value is None:
        raise LuvnetError(
            f"{label}: --eval-metric macro_auc: no pattern has validation clips both with and "
            f"without it at epoch {epoch + 1}, so no AUC is defined; use --eval-metric loss "
            "(or a split whose validation patients show and lack a pattern)"
        )
    return float(value)


def record_validation(progress: Progress, score: float, metric: str) -> bool:
    """Early-stopping bookkeeping for this epoch's ``metric`` figure; True when it is the best
    so far (lower for the loss, higher for an AUC; a tie is no gain)."""
    best = progress.best_score
    improved = best is None or (score < best if metric == "loss" else score > best)
    if improved:
        progress.best_score, progress.best_epoch, progress.bad_epochs = score, progress.epoch, 0
    else:
        progress.bad_epochs += 1
    return improved
