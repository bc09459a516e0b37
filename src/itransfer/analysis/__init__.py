"""Analysis of one run: results table + manifest → correlations → figures → report.

Modules, one job each:

* :mod:`~itransfer.analysis.sections`: one module per paper section (``transfer``,
  ``data_limits``, ...) holding its YAML keys, analysis, figures and findings;
* :mod:`~itransfer.analysis.run`: every section's analysis of one run, computed once;
* :mod:`~itransfer.analysis.rows`: which rows a section reads (steps, evaluation groups);
* :mod:`~itransfer.analysis.correlations`: pure per-task tables, Spearman + bootstrap, curves;
* :mod:`~itransfer.analysis.verdicts`: what a finding is, verdicts, Holm's adjustment;
* :mod:`~itransfer.analysis.plotting`: what a figure is, the shared drawing helpers;
* :mod:`~itransfer.analysis.html`: table and disclosure pieces of the report's HTML;
* :mod:`~itransfer.analysis.report`: ``write_report(run_dir)`` → ``report.html`` + ``report.md``.

Nothing here reads checkpoints: analysis sees only the results table and the manifest (a
:class:`itransfer.analysis.manifest.RunManifest`, the pipeline's own model of it). This
package does not import matplotlib until a figure is drawn.
"""
