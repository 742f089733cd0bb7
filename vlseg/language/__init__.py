"""Query understanding: chat sentences -> question intent + tumor-region targets (or a refusal)."""
from __future__ import annotations

from vlseg.language.parse import (
    MAX_QUERY_CHARS,
    Parse,
    QueryParser,
    TargetRef,
    capabilities_text,
    reply_text,
)
from vlseg.language.rules import INTENTS

__all__ = ["QueryParser", "Parse", "TargetRef", "INTENTS", "MAX_QUERY_CHARS",
           "capabilities_text", "reply_text"]
