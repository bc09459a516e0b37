"""The paper's sections, one module each: its YAML keys, analysis, figures and findings.

Importing this package imports every module in it, and each registers its section class
(:func:`itransfer.analysis.registry.register_section`); the registry orders them by
``paper_section``, which is the report's order. Adding a section is therefore one new module
here (and the experiment YAML that uses it); :mod:`itransfer.analysis.registry` says what its
class declares. A section kept elsewhere registers the same way when its module is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from itransfer.analysis.registry import SECTION_TYPES, Section
from itransfer.analysis.verdicts import Finding

# Found by listing this folder, so that a new section needs no line here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The sections and findings this package defines, in the paper's order (sections registered
# from elsewhere join the report through the registry, not these).
PAPER_SECTIONS: tuple[type[Section], ...] = tuple(
    section_cls for section_cls in SECTION_TYPES.values()
    if section_cls.__module__.startswith(f"{__name__}."))
PAPER_FINDINGS: tuple[Finding, ...] = tuple(
    finding for section_cls in PAPER_SECTIONS for finding in section_cls.findings)
