"""Instances as the model sees them: token ids, batches, per-token losses, the tokenized cache.

A layer above :mod:`itransfer.data` (tasks, splits, contexts) and below training and
evaluation, which both read examples through it: :mod:`~itransfer.encoding.examples` renders an
instance with its task context and tokenizes it within the length budget,
:mod:`~itransfer.encoding.token_losses` computes per-token losses of a batch, and
:mod:`~itransfer.encoding.cache` keeps the seen tasks' encoded training examples on disk.
"""
