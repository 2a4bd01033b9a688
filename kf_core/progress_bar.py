"""A tqdm progress bar as a training callback, for the command line."""

from __future__ import annotations

from typing import Any

from kf_core.loop import Callback, TrainState

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """One bar over all steps of a run, showing the epoch and the running loss."""

    def __init__(self, description: str, *, disable: bool | None = None) -> None:
        self.description = description
        self.disable = disable
        self._bar: Any = None

    def on_train_start(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        total = state.steps_per_epoch * state.epochs
        self._bar = tqdm(total=total, initial=state.global_step, desc=self.description, disable=self.disable)

    def on_step_end(self, state: TrainState) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if state.step_in_epoch % 10 == 0 or state.step_in_epoch == state.steps_per_epoch:
            self._bar.set_postfix(epoch=f"{state.epoch + 1}/{state.epochs}", loss=f"{state.metrics.get('loss', 0):.3f}")

    def on_epoch_end(self, state: TrainState) -> None:
        if self._bar is not None and state.epoch >= state.epochs:
            self._bar.close()
