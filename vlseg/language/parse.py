"""Query understanding: a sentence -> intent + target concepts (with scores), or a refusal.

    parser = QueryParser()                          # loads all-MiniLM-L6-v2 once
    p = parser.parse("segment the necrotic core and the edema")
    p.intent, [(t.concept, t.score) for t in p.targets]   # 'segment', [('NCR', 0.95), ('ED', 1.0)]
    parser.parse("how big is it?", previous=p)      # volume of NCR and ED, refers_to_previous

How a target phrase becomes a concept:
1. Keywords settle it where they are unambiguous ("necrotic" -> NCR, "core" -> TC, "tumor" -> WT;
   the more specific concept wins).
2. Otherwise the phrase is embedded with the text encoder and compared (cosine) with every
   phrasing in the concept bank and in a bank of things we do not segment (other organs, normal
   anatomy, unrelated topics). It is accepted only if its best concept similarity reaches
   ``min_score`` and beats the best out-of-scope similarity by ``min_margin``.
The reported score is the cosine similarity with the nearest phrasing of the chosen concept.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vlseg import vocab
from vlseg.errors import InputError
from vlseg.language import bank, intents, rules
from vlseg.language.context import FromContext
from vlseg.language.intents import Intent
from vlseg.language.places import Place, find_places, without_places
from vlseg.text.base import TextEncoder

MAX_QUERY_CHARS = 500


@dataclass(frozen=True)
class TargetRef:
    """One thing the user asked about: their phrase, the concept it maps to, and how sure."""

    phrase: str
    concept: str
    score: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "score", round(float(self.score), 3))  # as reported in JSON
        vocab.check_concept(self.concept)

    def to_json(self) -> dict[str, Any]:
        return {"phrase": self.phrase, "concept": self.concept, "score": self.score}


@dataclass(frozen=True)
class Parse:
    """What a query asks. ``refused`` parses have intent ``refuse`` and no targets."""

    query: str
    intent: str
    refused: bool
    targets: tuple[TargetRef, ...]
    refers_to_previous: bool = False
    reason: str | None = field(default=None, compare=False)  # why it was refused (for the reply)
    # A compound question ("where is it and how big?"): one single-intent Parse per question,
    # in the order asked; ``intent`` is the first one's and ``targets`` the union.
    parts: tuple["Parse", ...] = ()
    # Lobes, sides and structures the question is about ("does it reach the occipital lobe?").
    places: tuple[Place, ...] = ()
    # What came from the previous turn (None: nothing); ``refers_to_previous`` is its truth.
    context: FromContext | None = None
    # Relations the question names ("rim", "edema_extent": ``rules.relations_asked``).
    asks: tuple[str, ...] = ()
    # The intent's record in the intent table, looked up once (a ValueError naming the known
    # intents when there is none).
    spec: Intent = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", intents.get(self.intent))
        if self.refused != (self.intent == "refuse"):
            raise ValueError("refused must be True exactly when intent is 'refuse'")

    @property
    def concepts(self) -> tuple[str, ...]:
        return tuple(t.concept for t in self.targets)

    @property
    def questions(self) -> tuple["Parse", ...]:
        """The single-intent questions to answer, in order (itself when not compound)."""
        return self.parts or (self,)

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(p.intent for p in self.questions)

    def to_json(self) -> dict[str, Any]:
        out = {
            "query": self.query,
            "intent": self.intent,
            "intents": list(self.intents),
            "refused": self.refused,
            "targets": [t.to_json() for t in self.targets],
            "refers_to_previous": self.refers_to_previous,
            "reason": self.reason,
        }
        if self.parts:
            out["parts"] = [p.to_json() for p in self.parts]
        if self.places:
            out["places"] = [p.to_json() for p in self.places]
        if self.context:
            out["resolved_from_context"] = self.context.to_json()
        if self.asks:
            out["asks"] = list(self.asks)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Parse":
        """Inverse of ``to_json`` (e.g. chat history kept by the app between requests)."""
        try:
            targets = tuple(TargetRef(phrase=str(t["phrase"]), concept=str(t["concept"]),
                                      score=float(t["score"])) for t in obj.get("targets", []))
            parts = tuple(cls.from_json(p) for p in obj.get("parts", ()))
            places = tuple(Place(kind=str(p["kind"]), key=str(p["key"]), phrase=str(p["phrase"]))
                           for p in obj.get("places", ()))
            context = obj.get("resolved_from_context")
            return cls(query=str(obj["query"]), intent=str(obj["intent"]),
                       refused=bool(obj["refused"]), targets=targets,
                       refers_to_previous=bool(obj.get("refers_to_previous", False)),
                       reason=obj.get("reason"), parts=parts, places=places,
                       context=FromContext.from_json(context) if context else None,
                       asks=tuple(map(str, obj.get("asks", ()))))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a parse object: {e}") from e


@functools.lru_cache(maxsize=1)
def default_encoder() -> TextEncoder:
    """all-MiniLM-L6-v2, loaded once per process (inference only, so it is safe to share)."""
    from vlseg.text import build_text_encoder

    return build_text_encoder("minilm").eval()


class QueryParser:
    """Parses chat queries about a brain-tumor scan. Build once; ``parse`` is cheap (cached text)."""

    def __init__(self, *, encoder: TextEncoder | None = None, min_score: float = 0.45,
                 min_margin: float = 0.05, max_chars: int = MAX_QUERY_CHARS) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        if encoder is None:
            encoder = default_encoder()
        self.encoder = encoder
        self.min_score = float(min_score)
        self.min_margin = float(min_margin)
        self.max_chars = int(max_chars)
        # Embed the banks once: (K, dim) concept phrasings and (M, dim) out-of-scope phrasings.
        self.bank = bank.concept_bank()
        self.concepts: tuple[str, ...] = tuple(self.bank)
        self._bank_slices: dict[str, slice] = {}
        start = 0
        for concept in self.concepts:
            self._bank_slices[concept] = slice(start, start + len(self.bank[concept]))
            start += len(self.bank[concept])
        self._sim_cache: dict[str, dict[str, float]] = {}
        # Exact phrasing -> concept, for phrasings that belong to one concept only.
        owners: dict[str, set[str]] = {}
        for concept, phrases in self.bank.items():
            for p in phrases:
                owners.setdefault(p, set()).add(concept)
        self._exact = {p: next(iter(cs)) for p, cs in owners.items() if len(cs) == 1}
        self._bank_emb = self._embed([p for c in self.concepts for p in self.bank[c]])  # (K, dim)
        self._neg_emb = self._embed(list(bank.NEGATIVE_BANK))

    # ------------------------------------------------------------------ public
    def parse(self, query: str, *, previous: Parse | dict | None = None,
              timepoint: str | None = None) -> Parse:
        """Parse one query; ``previous`` (the last parse in this chat) resolves "it", "and the edema?";
        ``timepoint`` ("pre"/"post", None: not known) says what "all sub-regions" holds."""
        query = self._check(query)
        if isinstance(previous, dict):  # chat history kept as JSON (e.g. by the app)
            previous = Parse.from_json(previous)
        text = rules.normalize(query)

        # Refuse what is not ours to answer, before looking for targets.
        if rules.is_diagnostic(text):
            return _refuse(query, "diagnosis, grading and treatment questions are outside what a "
                                  "segmentation tool can answer")
        if bank.OFF_TOPIC.search(text):
            return _refuse(query, f"“{bank.OFF_TOPIC.search(text).group(0)}” is not a brain-tumor "
                                  "region, and brain-tumor MRI is all I analyse")

        # A compound question is answered part by part, in the order asked.
        clauses = rules.split_questions(text, intents.detect)
        if len(clauses) > 1:
            return self._parse_compound(query, clauses, previous, timepoint)
        return self._parse_text(query, text, previous, timepoint)

    def _parse_compound(self, query: str, clauses: list[str], previous: Parse | None,
                        timepoint: str | None) -> Parse:
        parts: list[Parse] = []
        prev = previous
        for clause in clauses:
            p = self._parse_text(query, clause, prev, timepoint)
            if prev is not previous and p.context:  # taken from an earlier part of this query
                p = dataclasses.replace(p, context=None, refers_to_previous=False)
            parts.append(p)  # a refused part stays, so the answer says what it could not do
            if not p.refused and p.targets:
                prev = p  # "where is the tumor, and how big is it?": "it" is the tumor
        answered = [p for p in parts if not p.refused]
        if not answered:
            return parts[0]
        if len(parts) == 1:
            return parts[0]
        targets = _dedupe([t for p in answered for t in p.targets])
        context = next((p.context for p in answered if p.context), None)  # from the last turn
        return Parse(query=query, intent=answered[0].intent, refused=False, targets=tuple(targets),
                     refers_to_previous=context is not None, parts=tuple(parts), context=context,
                     asks=tuple(dict.fromkeys(a for p in answered for a in p.asks)))

    def _parse_text(self, query: str, text: str, previous: Parse | None,
                    timepoint: str | None = None) -> Parse:
        """One question (normalized ``text``) -> Parse."""
        # Question type, the places it names (not targets), and target phrases.
        asks = rules.relations_asked(text)
        intent = intents.detect(text)
        inherit = _inherited_intent(text, intent, _usable(previous))
        spec = intents.get(inherit or intent) if (inherit or intent) is not None else None
        places = (find_places(text, prefer_structures=(inherit or intent) == "distance")
                  if spec is not None and spec.places else [])
        text = without_places(text, places) if places else text
        if spec is not None and not spec.names_targets:  # "is there midline shift?"
            spans: list[rules.Span] = []
        else:
            spans = ((spec.spans(text) if spec is not None and spec.spans is not None else None)
                     or rules.relation_spans(text) or rules.split_targets(text))
        named = [s for s in spans if not s.is_reference]
        if intents.asks_for_help(text) and (not named or rules.keyword_concept(text) is None):
            return Parse(query=query, intent="help", refused=False, targets=())

        # "all but the edema": every disjoint region except what follows.
        all_but = rules.ALL_BUT.search(text)
        if all_but is not None:
            excluded = self._parse_text(query, all_but.group("rest"), None, timepoint)
            if excluded.refused or not excluded.targets:
                return excluded if excluded.refused else _refuse(query, "say which region to leave out")
            drop = {p for t in excluded.targets for p in vocab.concept(t.concept).parts}
            keep = [self._named_target(c) for c in vocab.all_regions(timepoint) if c not in drop]
            return self._resolve(query, text, intent, list(keep), previous, timepoint, inherit=inherit)

        # Phrases -> concepts (None for a reference to the previous turn).
        resolved: list[TargetRef | None] = []
        scores = self._similarities([s.text for s in named] + [" ".join(s.minus) for s in named
                                                                if s.minus])
        for span in spans:
            if span.is_reference:
                resolved.append(None)
                continue
            ref = self._classify(span, scores[span.text])
            if isinstance(ref, str):
                return _refuse(query, ref)
            if span.minus:  # "the core without the necrosis" -> the enhancing tumor
                minus_text = " ".join(span.minus)
                minus = self._classify(rules.make_span(list(span.minus)), scores[minus_text])
                if isinstance(minus, str):
                    return _refuse(query, minus)
                resolved.extend(self._difference(ref, minus))
                continue
            resolved.append(ref)

        parse = self._resolve(query, text, intent, resolved, previous, timepoint, inherit=inherit)
        if parse.refused:
            return parse
        context = parse.context
        usable = _usable(previous)
        if not places and parse.spec.places and context and context.intent and usable is not None:
            # "what about the edema?" after "how far is the tumor from the motor cortex?"
            places = list(usable.places)
            context = dataclasses.replace(context, places=tuple(p.key for p in places))
        return dataclasses.replace(parse, places=tuple(places), asks=asks, context=context)

    # ------------------------------------------------------------------ steps
    def _check(self, query: Any) -> str:
        if not isinstance(query, str):
            raise InputError(f"a query must be text, got {type(query).__name__}")
        if len(query.strip()) > self.max_chars:
            raise InputError(f"query is {len(query.strip())} characters long; keep it under "
                             f"{self.max_chars} (ask one question at a time)")
        query = "".join(ch if ch.isprintable() else " " for ch in query).strip()
        if not query:
            raise InputError('empty query; ask e.g. "segment the necrotic core" or "help"')
        return query

    def _classify(self, span: rules.Span, sims: dict[str, float]) -> TargetRef | str:
        """A TargetRef, or a one-line reason to refuse the phrase."""
        head = " ".join(span.head)
        # A phrasing from the bank names its concept ("active tumor" is ET, not just "tumor").
        concept = self._exact.get(span.text) or self._exact.get(head)
        if concept is None:
            concept = rules.keyword_concept(head)
            generic_head = all(w in bank.GENERIC_NOUNS or w in bank.MODIFIERS for w in span.head)
            if concept is None and generic_head:
                concept = rules.keyword_concept(span.text)
            if concept is None and bank.BRAIN_ANATOMY.search(head):
                return f"“{span.text}” is not a tumor region I can segment"
            if concept == "WT":
                # Only the generic word "tumor" matched: let a clearly closer sub-region win.
                best = max(self.concepts, key=lambda c: sims[c])
                if best != "WT" and sims[best] >= 0.8 and sims[best] - sims["WT"] >= 0.1:
                    concept = best
        if concept is None:
            best = max(self.concepts, key=lambda c: sims[c])
            if sims[best] < self.min_score or sims[best] - sims["_neg"] < self.min_margin:
                return f"“{span.text}” does not match a tumor region I can segment"
            concept = best
        return TargetRef(phrase=span.text, concept=concept, score=sims[concept])

    def _resolve(self, query: str, text: str, intent: str | None,
                 resolved: list[TargetRef | None], previous: Parse | None,
                 timepoint: str | None = None, *, inherit: str | None = None) -> Parse:
        """Fill references from the previous turn, pick the intent, apply the defaults.
        ``inherit``: the previous question's intent, when this one keeps it (``_inherited_intent``)."""
        usable = _usable(previous)
        # "it"/"that" refer to what this query names; only when it names nothing (or fewer
        # regions than the question needs), to the last turn.
        targets = [r for r in resolved if r is not None]
        refers = any(r is None for r in resolved)
        taken: list[TargetRef] = []
        if not targets and rules.ALL_REGIONS.search(text):
            targets = [self._named_target(c) for c in vocab.all_regions(timepoint)]
        final = inherit or intent
        spec = intents.get(final) if final is not None else None
        if not targets:
            refers = refers or bool(rules.FOLLOW_UP.search(text) or rules.CORRECTION.search(text))
            if usable is not None and (intent is not None or refers):
                targets = taken = list(usable.targets)
            elif spec is not None and spec.default_target is not None:
                # "how big is it?" with nothing said before: the scan's tumor.
                targets = [self._named_target(spec.default_target)]
            elif refers:
                return _refuse(query, "there is no earlier question to refer to; name a region, "
                                      "e.g. 'segment the edema'")
            else:
                return _refuse(query, "no tumor region named; say e.g. 'segment the edema'")
        elif refers and usable is not None and spec is not None and len(targets) < spec.min_targets:
            # "how big is it compared to the whole tumor?": "it" is the last answer's region.
            taken = [t for t in usable.targets if t.concept not in {n.concept for n in targets}][:1]
            at = resolved.index(None)
            targets = [r for r in resolved[:at] if r is not None] + taken + \
                [r for r in resolved[at:] if r is not None]

        if final is None:
            final = "segment"
        spec = intents.get(final)
        targets = _dedupe(targets)
        if spec.min_targets == 2 and len(targets) == 1:
            # "what fraction is necrotic?": the part's default whole (NCR -> TC, ED -> WT);
            # "and the edema?" after a ratio: the whole asked about before.
            whole = vocab.concept(targets[0].concept).ratio_whole
            earlier = usable.targets[1].concept if inherit and usable and len(usable.targets) > 1 else None
            if earlier is not None and set(vocab.concept(targets[0].concept).parts) < set(
                    vocab.concept(earlier).parts):
                whole = earlier
            if whole is not None and whole != targets[0].concept:
                targets.append(self._named_target(whole))
        if len(targets) < spec.min_targets:
            return _refuse(query, "say which two regions to compare, e.g. "
                                  "'what fraction of the core is necrotic?'")
        context = None
        if usable is not None and (taken or inherit):
            context = FromContext(query=usable.query, targets=tuple(t.concept for t in taken),
                                  intent=inherit)
        return Parse(query=query, intent=final, refused=False, targets=tuple(targets),
                     refers_to_previous=context is not None, context=context)

    # ------------------------------------------------------------------ embeddings
    def _embed(self, phrases: list[str]) -> torch.Tensor:
        if not phrases:
            return torch.zeros(0, 1)
        return F.normalize(self.encoder.encode(phrases).float().cpu(), dim=-1)  # (N, dim)

    def _similarities(self, phrases: list[str]) -> dict[str, dict[str, float]]:
        """phrase -> {concept: best cosine, "_neg": best out-of-scope cosine} (cached per phrase)."""
        todo = [p for p in dict.fromkeys(phrases) if p not in self._sim_cache]
        if todo:
            emb = self._embed(todo)  # (N, dim)
            sim = emb @ self._bank_emb.T  # (N, K)
            best = torch.stack([sim[:, sl].max(dim=1).values for sl in self._bank_slices.values()],
                               dim=1)  # (N, len(CONCEPTS))
            neg = (emb @ self._neg_emb.T).max(dim=1).values  # (N,)
            if len(self._sim_cache) > 10_000:
                self._sim_cache.clear()
            for i, p in enumerate(todo):
                row = dict(zip(self._bank_slices, best[i].tolist()))
                row["_neg"] = float(neg[i])
                self._sim_cache[p] = row
        return {p: dict(self._sim_cache[p]) for p in phrases}

    def _difference(self, whole: TargetRef, minus: TargetRef) -> list[TargetRef]:
        """A region minus another, by their parts: TC − NCR = ET, WT − ED = TC; the remaining
        disjoint classes one by one when no concept is exactly that set."""
        rest = [p for p in vocab.concept(whole.concept).parts
                if p not in vocab.concept(minus.concept).parts]
        if not rest or rest == [whole.concept]:
            return [whole]
        exact = next((c.code for c in vocab.concepts() if set(c.parts) == set(rest)), None)
        return [self._named_target(c) for c in ([exact] if exact else rest)]

    def _named_target(self, concept: str) -> TargetRef:
        phrase = vocab.name(concept)
        score = self._similarities([phrase])[phrase][concept]
        return TargetRef(phrase=phrase, concept=concept, score=score)


def _usable(previous: Parse | None) -> Parse | None:
    """The previous question, if a follow-up can lean on it (answered, about some region)."""
    return previous if previous is not None and not previous.refused and previous.targets else None


def _inherited_intent(text: str, intent: str | None, usable: Parse | None) -> str | None:
    """The previous question's intent when this one keeps it: it names no question type ("and
    the edema?", "the core"), or it corrects the last one ("no, I meant the edema", "show me the
    enhancing part instead"). None: this question's own intent (or the default) holds."""
    if usable is None or not usable.spec.measures:
        return None
    if intent is None or (intent == "segment" and rules.CORRECTION.search(text)):
        # A question about the case, not a region ("is there midline shift?"): segment instead.
        return usable.intent if usable.spec.names_targets else (None if intent else "segment")
    return None


def _dedupe(targets: list[TargetRef]) -> list[TargetRef]:
    seen: set[str] = set()
    out = []
    for t in targets:
        if t.concept not in seen:
            seen.add(t.concept)
            out.append(t)
    return out


def _refuse(query: str, reason: str) -> Parse:
    return Parse(query=query, intent="refuse", refused=True, targets=(), reason=reason)
