"""One run's analysis: every section the manifest names, computed once.

Each section class (:mod:`itransfer.analysis.sections`) names its analysis class: its
``compute`` turns (results table, manifest, section) into the section's tables and its
``tables_html`` renders them for the report. :func:`analyse` runs every section's; the figures,
the findings and the report all read from the resulting :class:`RunAnalysis`, so each number
is computed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pandas as pd

from itransfer.analysis.block_bootstrap import task_categories
from itransfer.analysis.correlations import zero_shot_difficulty
from itransfer.analysis.manifest import RunManifest
from itransfer.analysis.registry import Section
from itransfer.analysis.rows import rows_of_groups
from itransfer.analysis.seeds import SeedCount, finetune_seed_count


class SectionAnalysis(Protocol):
    """What a section's ``analysis`` class provides."""

    @classmethod
    def compute(cls, frame: pd.DataFrame, manifest: RunManifest, section: Any, *,
                n_boot: int, seed: int) -> SectionAnalysis: ...

    def tables_html(self) -> str: ...


AnalysisT = TypeVar("AnalysisT")


@dataclass(frozen=True)
class RunAnalysis:
    manifest: RunManifest
    num_rows: int
    sections: dict[str, SectionAnalysis] = field(default_factory=dict)  # by section key
    # task → category, for the category-block bootstrap (empty: none recorded)
    categories: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    finetune_seeds: SeedCount = field(default_factory=lambda: SeedCount(0, 0, 0))
    # task → the pre-trained model's zero-shot loss, the partial correlations' control
    difficulty: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    def of(self, kind: type[AnalysisT]) -> AnalysisT | None:
        """This run's analysis of class ``kind``; None when the run lacks that section."""
        for found in self.sections.values():
            if isinstance(found, kind):
                return found
        return None


def analysis_class(section: Section) -> type[SectionAnalysis]:
    """The analysis class of ``section``'s class."""
    return type(section).analysis


def analyse(
    frame: pd.DataFrame, manifest: RunManifest, *, n_boot: int = 2000, seed: int = 0
) -> RunAnalysis:
    """Compute every section the manifest names, in the manifest's (the registry's) order,
    each on the rows of the task groups it reads (:func:`rows_of_groups`)."""
    sections = {
        key: analysis_class(section).compute(rows_of_groups(frame, type(section).task_groups),
                                             manifest, section, n_boot=n_boot, seed=seed)
        for key, section in manifest.sections.items()
    }
    return RunAnalysis(manifest=manifest, num_rows=len(frame), sections=sections,
                       categories=task_categories(frame),
                       finetune_seeds=finetune_seed_count(frame),
                       difficulty=zero_shot_difficulty(frame, manifest.pretrained))
