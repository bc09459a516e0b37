"""Analysis of one run: results table + manifest → correlations → figures → report.

Modules, one job each:

* :mod:`~itransfer.analysis.correlations`: pure per-task tables, Spearman + bootstrap, curves;
* :mod:`~itransfer.analysis.manifest`: a typed view of ``manifest.json`` and its sections;
* :mod:`~itransfer.analysis.sections`: every table a paper section needs, computed once;
* :mod:`~itransfer.analysis.paper`: the paper's findings and reported numbers, as data;
* :mod:`~itransfer.analysis.findings`: each finding recomputed on a run, with a verdict;
* :mod:`~itransfer.analysis.figures`: Figures 1–4 as PNGs;
* :mod:`~itransfer.analysis.report`: ``write_report(run_dir)`` → ``report.html`` + ``report.md``.

Nothing here reads checkpoints: analysis sees only the results table and the manifest. This
package does not import matplotlib until a figure module is imported.
"""
