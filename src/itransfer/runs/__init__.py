"""What a run is and what it leaves behind: its identity keys and resume check
(:mod:`~itransfer.runs.identity`), the evaluation plans they hash
(:mod:`~itransfer.runs.eval_plan`), upgrades of files older versions wrote
(:mod:`~itransfer.runs.compat`), run records (:mod:`~itransfer.runs.provenance`), the
checkpoint folder that training writes and evaluation reads (:mod:`~itransfer.runs.checkpoints`),
and what training hands a transfer monitor (:mod:`~itransfer.runs.probe`)."""
