"""Partial-label training of vlseg models (driven by ``train/train.py`` through accelerate).

Parts: ``config`` (YAML -> frozen dataclasses), ``sources`` (dataset sources, partial labels,
weighted mixture), ``cache`` (preprocessing cache), ``prompts`` (phrase bank), ``augment``,
``losses``, ``build`` (the model a run trains), ``loop`` (the accelerate loop, checkpoints,
resume), ``validate`` (scores the masks users get). LoRA adapters live in ``vlseg.model.adapters``.
"""
from vlseg.training.prompts import concept_phrases

__all__ = ["concept_phrases"]
