"""The process a command runs in: joining launched processes (:mod:`~itransfer.runtime.launch`),
stop requests from signals (:mod:`~itransfer.runtime.stopping`) and crash-safe file writes
(:mod:`~itransfer.runtime.atomic_files`)."""
