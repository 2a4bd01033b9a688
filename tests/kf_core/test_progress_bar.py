"""The command-line progress bar: its epoch text agrees with its percentage, up to the last step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kf_core import ProgressBar, TrainConfig, epoch_text
from kf_core.loop import run_loop


@pytest.mark.parametrize(
    ("step", "want"),
    [(0, "1/4"), (1, "1/4"), (25, "1/4"), (26, "2/4"), (76, "4/4"), (98, "4/4"), (100, "4/4"), (130, "4/4")],
)
def test_epoch_text_is_the_epoch_of_the_last_finished_step(step: int, want: str) -> None:
    assert epoch_text(step, 25, 4) == want  # 4 epochs of 25 steps: 98 % is in the fourth


def test_epoch_text_without_steps_says_nothing_has_run() -> None:
    assert epoch_text(0, 0, 3) == "0/3"


def test_the_bar_ends_full_on_the_last_epoch() -> None:
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    x = torch.randn(37, 3)

    def step(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = module(x[torch.from_numpy(idx)]).pow(2).mean()
        return loss, {"loss": loss}

    bar = ProgressBar("test", disable=False)
    cfg = TrainConfig(epochs=3, batch_size=4, eval_every=0)
    state = run_loop(
        module=module,
        step_fn=step,
        n_samples=len(x),
        cfg=cfg,
        fingerprint="bar",
        callbacks=[bar],
        checkpoint=None,
        eval_fn=None,
    )
    total = state.steps_per_epoch * state.epochs
    assert state.steps_per_epoch == 9  # 37 samples in batches of 4, the ragged tail dropped
    assert bar._bar.n == bar._bar.total == total
    assert "epoch=3/3" in bar._bar.postfix
