"""Analysis of one run: results table + manifest → correlations → figures → report.

Modules, one job each:

* :mod:`~itransfer.analysis.correlations`: pure per-task tables, Spearman + bootstrap, curves;
* :mod:`~itransfer.analysis.sections`: each paper section's analysis (the class its schema
  section points to), computed once;
* :mod:`~itransfer.analysis.html`: table and disclosure pieces of the report's HTML;
* :mod:`~itransfer.analysis.paper`: the paper's findings and reported numbers, as data;
* :mod:`~itransfer.analysis.findings`: each finding recomputed on a run, with a verdict;
* :mod:`~itransfer.analysis.figures`: Figures 1–4 as PNGs;
* :mod:`~itransfer.analysis.report`: ``write_report(run_dir)`` → ``report.html`` + ``report.md``.

Nothing here reads checkpoints: analysis sees only the results table and the manifest (a
:class:`itransfer.schema.RunManifest`, the pipeline's own model of it). This
package does not import matplotlib until a figure module is imported.
"""
