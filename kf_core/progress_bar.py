"""A tqdm progress bar as a training callback, for the command line."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from kf_core.loop import Callback, TrainState

__all__ = ["ProgressBar", "epoch_text"]


def epoch_text(step: int, steps_per_epoch: int, epochs: int) -> str:
    """``"k/epochs"``, k the epoch that step ``step`` (1-based, counted over all epochs) belongs to.

    Derived from the step, like the bar's percentage, so the two always agree: past 75 % of four epochs it says
    4/4, and once every step is done it says the last epoch, never one short of it.
    """
    if steps_per_epoch <= 0 or epochs <= 0:
        return f"0/{max(epochs, 0)}"
    current = -(-step // steps_per_epoch)  # ceil: the epoch of the last finished step
    return f"{min(max(current, 1), epochs)}/{epochs}"


class ProgressBar(Callback):
    """One bar over all steps of a run, showing the epoch and the running loss."""

    def __init__(self, description: str, *, disable: bool | None = None) -> None:
        self.description = description
        self.disable = disable
        self._bar: Any = None

    def on_train_start(self, state: TrainState) -> None:
        total = state.steps_per_epoch * state.epochs
        self._bar = tqdm(total=total, initial=state.global_step, desc=self.description, disable=self.disable)

    def on_step_end(self, state: TrainState) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if state.step_in_epoch % 10 == 0 or state.step_in_epoch == state.steps_per_epoch:
            self._bar.set_postfix(
                epoch=epoch_text(state.global_step, state.steps_per_epoch, state.epochs),
                loss=f"{state.metrics.get('loss', 0):.3f}",
            )

    def on_epoch_end(self, state: TrainState) -> None:
        if self._bar is not None and state.epoch >= state.epochs:
            self._bar.close()
