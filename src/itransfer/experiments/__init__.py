"""Experiments: the YAML that names a base config, its model variants and the paper sections to
analyse (:mod:`~itransfer.experiments.definition`), and the cached, resumable stages that run
it (:mod:`~itransfer.experiments.pipeline`)."""
