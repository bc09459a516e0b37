"""The verdict machinery every section's findings share: what a finding is, how a verdict is
reached, and the report's multiplicity adjustment.

A finding (:class:`Finding`) is one of the paper's claims as data — the number the paper
reports, the figure it reads it from — plus the function that recomputes it on a run; each
section module defines its own beside its analysis. Every verdict rests on a test over tasks
(:mod:`itransfer.analysis.significance`), named with its statistic and p-value or CI:

* ✓ "reproduces": the claim's direction holds in every part of it and each part's test, one-sided
  in the claimed direction, passes at α = 0.05 (for a claim made of several tests, e.g. "at
  every checkpoint", every one of them: an intersection–union test, whose p-value is the
  largest of its parts);
* ≈ "reproduces (not significant)": the direction holds in every part, a test does not pass;
* ◐ "partly reproduces": the direction holds in a majority (more than half) of the parts and
  no part is significantly opposite;
* ✗ "does not reproduce": anything else, and always when a part's one-sided test in the
  opposite direction has p < α; ? "undefined": too few tasks or points to say.

A part tested by a paired test holds when its signed ranks lean the claimed way
(:attr:`PairedTest.favours_claim`), not when its mean does: one outlier task cannot set the
direction. The report adjusts the verdicts' one-sided p-values for multiplicity with Holm's
method across its findings (:func:`adjust_for_multiplicity`) and says which ✓ survive. Findings
whose section the experiment did not run are left out, not marked as failures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from itransfer.analysis.block_bootstrap import Robustness
from itransfer.analysis.correlations import Correlation, PartialCorrelation
from itransfer.analysis.registry import section_types
from itransfer.analysis.run import RunAnalysis
from itransfer.analysis.significance import PairedTest, holm, one_sided_p

ALPHA = 0.05
# §5.1 calls the early-phase correlation "very low" (ρ = 0.245). "Weak" here means a rank
# correlation inside (−0.4, 0.4), the usual upper edge of "weak" (Evans, 1996: 0.20–0.39).
WEAK_RHO = 0.4

REPRODUCES = "reproduces"
NOT_SIGNIFICANT = "reproduces (not significant)"
PARTLY = "partly reproduces"
FAILS = "does not reproduce"
UNDEFINED = "undefined"

FindingKind = Literal["correlation", "direction"]
# A figure's name as the report captions it: "Figure 4 (centre, right)".
_FIGURE_NAME = re.compile(r"Figure (?P<number>\S+) \((?P<panels>[^()]+)\)")


@dataclass(frozen=True)
class BootstrapOptions:
    """How the findings' bootstrap tests are run."""

    n_boot: int
    seed: int


Evaluator = Callable[[RunAnalysis, "Finding", BootstrapOptions], "FindingResult"]
# A finding's tests rerun under the category-block bootstrap (itransfer.analysis.block_bootstrap).
RobustnessCheck = Callable[[RunAnalysis, BootstrapOptions], Robustness]


@dataclass(frozen=True)
class Finding:
    """One claim of the paper (Mueller, Dredze & Andrews) and how a run is judged against it.

    Numbers are copied from the text (§3.1, §3.2, §5.1); claims the paper makes only from a
    plot are directions (which is lower), since the plotted values cannot be read back exactly.
    """

    id: str
    paper_section: str  # the paper's numbering, e.g. "3.1"
    section: str  # the key of the section whose analysis it reads
    figure: str  # the name of the report figure it reads, e.g. "Figure 4 (centre, right)"
    claim: str
    kind: FindingKind
    paper_value: float | None  # Spearman's rho for correlations; None for directions
    paper_p: float | None
    paper_text: str  # the paper's result as shown in the report
    how_to_compute: str
    evaluate: Evaluator = field(repr=False, compare=False)
    panel: str | None = None  # one panel of a figure of several, e.g. "centre"
    # A comparison of ours beside the paper's claims: shown, but outside the Holm family.
    ours: bool = False
    robustness: RobustnessCheck | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.figure_cell  # noqa: B018  (a malformed figure or panel fails at import)

    @property
    def figure_cell(self) -> str:
        """The findings table's figure column: "4 (centre)" for panel centre of Figure 4."""
        match = _FIGURE_NAME.fullmatch(self.figure)
        if match is None:
            raise ValueError(f"finding '{self.id}': {self.figure!r} is not a figure name "
                             "like 'Figure 1 (left)'")
        panels = match["panels"].split(", ")
        if self.panel is not None and self.panel not in panels:
            raise ValueError(f"finding '{self.id}': {self.figure} has no panel {self.panel!r}")
        return f"{match['number']} ({self.panel or match['panels']})"


@dataclass(frozen=True)
class FindingResult:
    finding: Finding
    verdict: str
    run_value: float | None  # rho for correlations, a signed difference for directions
    run_p: float | None  # the p-value the verdict rests on (the largest, for several tests)
    run_text: str
    correlation: Correlation | None = None
    test: str = ""  # the test(s) behind the verdict, with statistics and p-values or CIs
    holm_p: float | None = None  # run_p adjusted across the report's findings
    # the same tests under the category-block bootstrap (None: the finding has no such check)
    robustness: Robustness | None = None


def registered_findings() -> tuple[Finding, ...]:
    """Every registered section's findings: the paper's order, section by section."""
    return tuple(finding for section_cls in section_types().values()
                 for finding in section_cls.findings)


def evaluate_findings(analysis: RunAnalysis, *, n_boot: int = 2000, seed: int = 0
                      ) -> list[FindingResult]:
    """Every finding whose section this run has, in the paper's order, Holm-adjusted."""
    bootstrap = BootstrapOptions(n_boot=n_boot, seed=seed)
    results = [finding.evaluate(analysis, finding, bootstrap)
               for finding in registered_findings() if finding.section in analysis.sections]
    results = [with_robustness(result, analysis, bootstrap) for result in results]
    return adjust_for_multiplicity(results)


def with_robustness(result: FindingResult, analysis: RunAnalysis, bootstrap: BootstrapOptions
                    ) -> FindingResult:
    """Attach the finding's category-block bootstrap check, when it has one and a verdict."""
    check = result.finding.robustness
    if check is None or result.verdict == UNDEFINED:
        return result
    return replace(result, robustness=check(analysis, bootstrap))


def robustness_summary(results: Sequence[FindingResult]) -> str:
    """One sentence on the ✓ verdicts that rest on tasks being independent."""
    reproduced = [result for result in results if result.verdict == REPRODUCES]
    confirmed = [result for result in reproduced if result.robustness is not None
                 and result.robustness.survives is not None]
    if not reproduced:
        return "Category bootstrap: no ✓ verdict to recheck."
    if not confirmed:
        return ("Category bootstrap: no ✓ verdict could be rechecked (tasks in fewer than two "
                "categories, or none recorded).")
    failing = [result.finding.id for result in confirmed if not result.robustness.survives]
    text = (f"Category bootstrap (categories, then tasks within them, resampled): "
            f"{len(confirmed) - len(failing)} of the {len(confirmed)} ✓ verdicts it could "
            "recheck survive it")
    return text + (f"; not: {', '.join(failing)}." if failing else ".")


def adjust_for_multiplicity(results: Sequence[FindingResult]) -> list[FindingResult]:
    """Attach Holm-adjusted p-values across every paper finding that has a p-value (our own
    comparisons are not the paper's claims and stay out of the family)."""
    adjusted = holm([math.nan if result.run_p is None or result.finding.ours else result.run_p
                     for result in results])
    return [replace(result, holm_p=None if math.isnan(p) else p)
            for result, p in zip(results, adjusted, strict=True)]


def holm_summary(results: Sequence[FindingResult]) -> str:
    """One sentence on multiplicity for the report."""
    tested = [result for result in results if result.holm_p is not None]
    confirmed = [result for result in results
                 if result.verdict == REPRODUCES and not result.finding.ours]
    surviving = [result for result in confirmed
                 if result.holm_p is not None and result.holm_p < ALPHA]
    return (f"Multiplicity: {len(tested)} findings rest on a p-value; after Holm's adjustment "
            f"across them, {len(surviving)} of the {len(confirmed)} ✓ verdicts keep p < {ALPHA}.")


# --- building blocks of the sections' evaluators ---------------------------------------------


def undefined(finding: Finding, why: str) -> FindingResult:
    return FindingResult(finding, UNDEFINED, None, None, why)


def verdict(directions: Sequence[bool], significant: Sequence[bool],
            opposite: Sequence[bool] = ()) -> str:
    """One claim's symbol from its parts: ``directions`` (does each part go the claimed way),
    ``significant`` (does each test pass, one-sided in the claimed direction) and ``opposite``
    (is a part significant the other way).

    ✓ when every direction holds and every test passes; ≈ when every direction holds; ◐ when
    more than half of them hold; ✗ otherwise, and whenever a part is significantly opposite:
    evidence against the claim is not a partial reproduction of it."""
    if not directions:
        return UNDEFINED
    if any(opposite):
        return FAILS
    if all(directions):
        return REPRODUCES if significant and all(significant) else NOT_SIGNIFICANT
    return PARTLY if 2 * sum(directions) > len(directions) else FAILS


def passes(test: PairedTest) -> bool:
    """The paired test rejects at α in the claimed direction (its p-value is one-sided)."""
    return test.defined and test.p_value < ALPHA


def opposed(test: PairedTest) -> bool:
    """The paired test's one-sided test in the opposite direction rejects at α."""
    return test.defined and test.opposite_p < ALPHA


def holds(test: PairedTest, fallback: bool) -> bool:
    """Does a part tested by ``test`` go the claimed way: by its ranks when the test is defined,
    else by ``fallback`` (the means, for too few tasks to rank)."""
    return test.favours_claim if test.defined else fallback


@dataclass
class Parts:
    """The parts of one claim, gathered as a section's evaluator tests them."""

    directions: list[bool] = field(default_factory=list)
    significant: list[bool] = field(default_factory=list)
    opposite: list[bool] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)  # one-sided, in the claimed direction

    def add(self, direction: bool, significant: bool, opposite: bool, p_value: float) -> None:
        self.directions.append(direction)
        self.significant.append(significant)
        self.opposite.append(opposite)
        self.p_values.append(p_value)

    def add_paired(self, test: PairedTest, fallback: bool) -> None:
        """A part tested by a paired test; ``fallback`` is its direction by the means."""
        self.add(holds(test, fallback), passes(test), opposed(test), test.p_value)

    def verdict(self) -> str:
        return verdict(self.directions, self.significant, self.opposite)

    def largest_p(self) -> float | None:
        return largest_p(self.p_values)


def largest_p(p_values: Sequence[float]) -> float | None:
    """The p-value of an intersection–union test: the largest of its parts."""
    if not p_values or any(math.isnan(p) for p in p_values):
        return None
    return max(p_values)


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def spearman_test_text(correlation: Correlation, name: str = "ρ") -> str:
    """Spearman's test of a claimed positive ρ, one-sided, with the opposite p when ρ < 0."""
    towards = one_sided_p(correlation.p_value, correlation.rho, 1.0)
    text = (f"Spearman's test: {name}={correlation.rho:.3f}, one-sided p={towards:.2g} "
            f"for ρ > 0, n={correlation.n}")
    if correlation.rho < 0:
        away = one_sided_p(correlation.p_value, correlation.rho, -1.0)
        text += f"; opposite: p={away:.2g} for ρ < 0"
    return text


def correlation_result(finding: Finding, correlation: Correlation, extra: str = "",
                       partial: PartialCorrelation | None = None) -> FindingResult:
    """A claimed positive correlation: ✓ when ρ > 0 and Spearman's one-sided test has p < α;
    ✗ when ρ ≤ 0 (one part: no ◐)."""
    if partial is not None:
        extra += f"; {partial.describe()}"
    if not correlation.defined:
        return FindingResult(finding, UNDEFINED, None, None, correlation.describe() + extra,
                             correlation)
    towards = one_sided_p(correlation.p_value, correlation.rho, 1.0)
    found = verdict([correlation.rho > 0], [towards < ALPHA])
    return FindingResult(finding, found, correlation.rho, towards,
                         correlation.describe() + extra, correlation,
                         test=spearman_test_text(correlation))
