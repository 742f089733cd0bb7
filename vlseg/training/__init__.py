"""Partial-label training of vlseg models (driven by ``train/train.py`` through accelerate).

Parts: ``config`` (YAML -> frozen dataclasses), ``sources`` (dataset sources, partial labels,
weighted mixture), ``cache`` (preprocessing cache), ``prompts`` (phrase bank), ``augment``,
``losses``, ``loop`` (the accelerate loop, checkpoints, resume), ``validate``, ``lora``
(fine-tuning adapters).
"""
from vlseg.training.prompts import concept_phrases

__all__ = ["concept_phrases"]
