"""The paper's sections, one module each: its YAML keys, analysis, figures and findings.

Importing this package registers them (:func:`itransfer.schema.register_section`) in the
order of the imports below, which is the paper's and therefore the report's. A section of
your own is one more module like these (see :mod:`itransfer.schema` for what its class
declares), imported before the experiments that use it are loaded.
"""

from __future__ import annotations

# The order of these imports is the registration order: keep isort away from it.
# isort: off
from itransfer.analysis.sections.transfer import TransferSection
from itransfer.analysis.sections.data_limits import DataLimitsSection
from itransfer.analysis.sections.samplers import SamplersSection
from itransfer.analysis.sections.trajectory import TrajectorySection
from itransfer.analysis.sections.mixing import MixingSection
from itransfer.analysis.sections.heldout_groups import HeldoutGroupsSection
# isort: on
from itransfer.analysis.verdicts import Finding

PAPER_SECTIONS = (TransferSection, DataLimitsSection, SamplersSection, TrajectorySection,
                  MixingSection, HeldoutGroupsSection)
# The paper's findings in its order (sections registered later add theirs to the report's
# through the registry, not here).
PAPER_FINDINGS: tuple[Finding, ...] = tuple(
    finding for section_cls in PAPER_SECTIONS for finding in section_cls.findings)

__all__ = ["PAPER_FINDINGS", "PAPER_SECTIONS", "DataLimitsSection", "HeldoutGroupsSection",
           "MixingSection", "SamplersSection", "TrajectorySection", "TransferSection"]
