"""Query understanding: chat sentences -> question intent + tumor-region targets (or a refusal).

What each intent looks like lives in the intent table (``vlseg.language.intents``); the words of each
concept in the vocabulary (``vlseg.vocab``)."""
from __future__ import annotations

from vlseg.language.context import FromContext
from vlseg.language.intents import Intent
from vlseg.language.parse import MAX_QUERY_CHARS, Parse, QueryParser, TargetRef

__all__ = ["FromContext", "Intent", "QueryParser", "Parse", "TargetRef", "MAX_QUERY_CHARS"]
