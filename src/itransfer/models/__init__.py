"""Hugging Face models: loading a model and tokenizer by name or path, saving them atomically
(:mod:`~itransfer.models.loading`), and which modules a few-shot LoRA adapts
(:mod:`~itransfer.models.lora_targets`)."""
