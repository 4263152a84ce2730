"""When a fold stops training: its epochs, early stopping on the validation loss (docs/model.md,
"Data and training protocol"), and its time budget."""

from __future__ import annotations

from luvnet.engine.training.settings import FitSettings
from luvnet.engine.training.state import Progress


def stop_reason(progress: Progress, settings: FitSettings, elapsed_s: float) -> str | None:
    """Why this fold is finished under the current settings, or None to keep training."""
    if progress.epoch >= settings.epochs:
        return "max_epochs"
    if progress.best_val_loss is not None and progress.bad_epochs >= settings.patience:
        return "early_stop"
    if settings.budget_s is not None and elapsed_s >= settings.budget_s:
        return "budget"
    return None


def record_validation_loss(progress: Progress, loss: float) -> bool:
    """Early-stopping bookkeeping for this epoch's validation loss; True when it is the best."""
    improved = progress.best_val_loss is None or loss < progress.best_val_loss
    if improved:
        progress.best_val_loss, progress.best_epoch, progress.bad_epochs = loss, progress.epoch, 0
    else:
        progress.bad_epochs += 1
    return improved
