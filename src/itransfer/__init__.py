"""itransfer: instruction tuning as multi-task transfer.

A reference implementation of "Multi-Task Transfer Matters During Instruction-Tuning"
(Mueller, Dredze and Andrews): instruction-tune a language model on Super-NaturalInstructions
under different task samplers, data limits and unsupervised mixing, then measure transfer to
unseen tasks by few-shot LoRA fine-tuning and by in-context learning.
"""

__version__ = "0.1.0"
