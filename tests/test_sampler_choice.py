"""§4 chooses reverse annealing's maximum temperature on the seen tasks' validation loss."""

from __future__ import annotations

import pandas as pd

from itransfer.analysis.seen_fit import _chosen_on_validation


def test_lowest_validation_loss_within_each_family_is_chosen() -> None:
    summary = pd.DataFrame({
        "sampler": ["proportional", "uniform", "ra-100", "ra-1000", "ra-10000"],
        "seen_validation_loss": [2.0, 2.5, 2.2, 1.9, 2.4],
    })
    assert _chosen_on_validation(summary).tolist() == [True, True, False, True, False]
