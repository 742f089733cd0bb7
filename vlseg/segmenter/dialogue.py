"""The dialogue: a question and the conversation so far -> an :class:`Answer`.

The parser turns the query into single-intent questions, each carrying its record from the
intent table (``vlseg.language.intents``); that record says what to decode, which companions to
measure, which case facts to report and which composer writes the sentences. Nothing here
depends on the kind of question. Masks come from the predictor (``vlseg.predict.Predictor``);
measurements, the atlas registration, relations, case facts and intervals are kept per case
and reused by follow-ups until the labelling changes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vlseg import vocab
from vlseg.io import Case
from vlseg.language import Intent, Parse, QueryParser, TargetRef
from vlseg.language.intents import capabilities_text
from vlseg.language.intents import get as get_intent
from vlseg.numbers import round_fraction, round_ml
from vlseg.predict import Predictor
from vlseg.reasoning import (
    AtlasLocator,
    Facts,
    Relations,
    TargetMeasurement,
    finish,
    measure_target,
    measurement_to_json,
    relations,
    relations_to_json,
)
from vlseg.reasoning import case_facts
from vlseg.reasoning.answer import possibly_none
from vlseg.reasoning.calibration import Calibration
from vlseg.reasoning.grouping import lesion_masks
from vlseg.errors import VlsegError
from vlseg.segmenter.answer import Answer, JsonObject, ModelInfo
from vlseg.segmenter.timepoint import Timepoint, decide, post_concepts

LOCATOR_SEQUENCES = ("t1n", "t1c", "t2w", "t2f")  # closest to the T1 atlas template first


@dataclass
class CaseTalk:
    """What the dialogue keeps about the case that is set (reset with the case)."""

    case: Case
    warnings: list[str] = field(default_factory=list)  # said with every answer on the case
    previous: Parse | None = None  # the last answered Parse, for "how big is it?"
    locator: AtlasLocator | None = None  # fitted lazily on the first measured question
    locator_failed: str | None = None
    facts: JsonObject = field(default_factory=dict)  # case facts: name or name_error -> value
    # Derived from one labelling (``generation``), reused by follow-ups until it changes.
    generation: int = -1
    measured: dict[str, TargetMeasurement] = field(default_factory=dict)
    relations: Relations | None = None
    intervals: dict[tuple[str, float], tuple[float, float] | None] = field(default_factory=dict)
    timepoint_asked: str = "auto"  # pre | post | auto, as the user set it
    timepoint: Timepoint | None = None  # decided at the first question
    empty: np.ndarray | None = None  # the mask of a concept the time point rules out (read-only use)


class Dialogue:
    """Answers questions about the predictor's case through the intent table."""

    def __init__(self, *, parser: QueryParser, calibration: Calibration, threshold: float) -> None:
        self.parser = parser
        self.calibration = calibration
        self.threshold = threshold

    def ask(self, talk: CaseTalk, predictor: Predictor, query: str, *, confidence: float,
            model: ModelInfo) -> Answer:
        """Answer one query (a compound one part by part, in order); ``talk`` carries over."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()

        # Pre- or post-treatment, decided once per case (auto decodes the cavity)
        if talk.timepoint is None:
            talk.timepoint = decide(talk.timepoint_asked, predictor)
        tp = talk.timepoint
        # Understand the query; a concept the model does not segment is refused, not decoded
        parse = self.parser.parse(query, previous=talk.previous, timepoint=tp.assumed)
        unknown = [c for c in parse.concepts if c not in predictor.concepts]
        ruled_out = [c for c in parse.concepts if tp.asked == "pre" and tp.excludes(c)]
        if ruled_out and not unknown:
            parse = Parse(query=parse.query, intent="refuse", refused=True, targets=(),
                          reason=f"no {vocab.name(ruled_out[0])} is reported on this scan: {tp.reason}; "
                                 "give the time point as post (or auto) for a scan after surgery")
        if unknown:
            missing = " or the ".join(vocab.name(c) for c in unknown)
            post = " (a post-treatment concept: load a model trained on post-treatment scans)" if any(
                vocab.concept(c).timepoint == "post" for c in unknown) else ""
            parse = Parse(query=parse.query, intent="refuse", refused=True, targets=(),
                          reason=f"this model does not segment the {missing}{post}")
        questions = parse.questions
        timing["parse"] = time.perf_counter() - t0
        measures = any(q.spec.measures for q in questions)
        if measures:
            talk.previous = questions[-1] if questions[-1].targets else parse

        # Condition on prompts: decode only what is not cached yet, one labelling of the case
        t1 = time.perf_counter()
        decoded = tuple(dict.fromkeys(c for q in questions for c in q.spec.decode(q.concepts)))
        if tp.assumed == "post":  # the cavity is always part of a post-treatment labelling
            decoded += tuple(c for c in post_concepts(predictor) if c not in decoded)
        masks = self._masks(talk, predictor, decoded)
        if talk.generation != predictor.generation:  # a new labelling: the old measures are stale
            talk.generation, talk.measured, talk.relations, talk.intervals = predictor.generation, {}, None, {}
        timing["decode"] = time.perf_counter() - t1

        # Measure, locate, relate: each target once, whatever asks for it
        t2 = time.perf_counter()
        measured: dict[str, TargetMeasurement] = {}
        rel: Relations | None = None
        if measures:
            locator = self._locator(talk)  # every target reports hemisphere and lobes
            wanted = parse.concepts + tuple(c for q in questions for c in q.spec.companions(q.concepts))
            for c in dict.fromkeys(wanted):
                measured[c] = self._measure(talk, predictor, c, locator)
            for fact in dict.fromkeys(f for q in questions for f in q.spec.case_facts):
                self._case_fact(talk, predictor, fact)
            if all(c in decoded for c in vocab.relation_concepts()):
                if talk.relations is None:
                    talk.relations = relations({c: masks[c] for c in vocab.relation_concepts()},
                                               talk.case.affine)
                rel = talk.relations
        timing["measure"] = time.perf_counter() - t2

        # Calibrated intervals at the asked confidence, in the JSON the text is built from
        target_json, rel_json = self._with_intervals(talk, predictor, measured, rel, confidence)

        # Compose: each question's sentences through its intent's composer
        parts = [(q.spec, Facts(targets=[target_json[c] for c in q.concepts],
                                relations=rel_json if q.spec.relations(q.concepts) else None,
                                phrases=[t.phrase for t in q.targets], reason=q.reason,
                                asks=q.asks or parse.asks,
                                help_text=capabilities_text(predictor.concepts),
                                places=[p.to_json() for p in q.places or parse.places],
                                case=dict(talk.facts), confidence=confidence,
                                companions={c: target_json[c] for c in q.spec.companions(q.concepts)
                                            if c in target_json}))
                 for q in questions]
        grounded = bool(measured)
        notes = (*talk.warnings, *((f"Location unavailable: {talk.locator_failed}.",)
                                   if grounded and talk.locator_failed else ()),
                 *self._timepoint_notes(tp, predictor, parse.concepts))
        text = answer_text_parts(parts, sequences_used=list(talk.case.present), notes=notes,
                                 calibrated=self._calibration(predictor).calibrated)
        timing["total"] = time.perf_counter() - t0
        answer = self._answer(talk, predictor, parse, text, [measured[c] for c in parse.concepts],
                              rel, timing, model, target_json=target_json, relations_json=rel_json)
        answer.confidence = confidence if grounded else None
        answer.calibration = self._calibration(predictor).describe(confidence) if grounded else None
        answer.timepoint = tp.to_json()
        if grounded:  # whether each asked region is there at all (vlseg.reasoning.presence)
            known = predictor.presence()
            answer.presence = {"calibrated": predictor.presence_model.calibrated,
                               "probability": {c: (None if known.get(c) is None else round(known[c], 4))
                                               for c in parse.concepts}}
        return answer

    # ----------------------------------------------------------------- steps
    @staticmethod
    def refined(predictor: Predictor) -> bool:
        """Whether the case's masks went through the refinement stage."""
        result = predictor.refinement() if predictor.refines else None
        return result is not None and result.ran

    def _calibration(self, predictor: Predictor) -> Calibration:
        """The calibration of the stage that made the case's masks."""
        return self.calibration.for_stage(self.refined(predictor))

    @staticmethod
    def _timepoint_notes(tp: Timepoint, predictor: Predictor, concepts: tuple[str, ...]) -> tuple[str, ...]:
        """After surgery, what the tumor regions leave out (said when one is asked)."""
        cavity = post_concepts(predictor)
        tumor = [c for c in concepts if c not in cavity and vocab.concept(c).timepoint is None]
        if tp.assumed != "post" or not cavity or not tumor:
            return ()
        return (f"On this post-treatment scan the {_join_names(cavity)} is not counted in any tumor "
                "region (as in BraTS 2024).",)

    def labelling(self, talk: CaseTalk, predictor: Predictor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The case's (probabilities, masks) as its time point allows (what the answers measure)."""
        return self._labelling(talk, predictor)

    @staticmethod
    def _labelling(talk: CaseTalk, predictor: Predictor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The predictor's labelling as this scan's time point allows: a concept the scan cannot
        hold (the cavity on an untreated scan) is empty."""
        probs, masks = predictor.labelling()
        tp = talk.timepoint
        excluded = [c for c in masks if tp is not None and tp.excludes(c)]
        if excluded:  # one empty mask per labelling, not one per call
            if talk.empty is None or talk.empty.shape != masks[excluded[0]].shape:
                talk.empty = np.zeros_like(masks[excluded[0]])
            masks = {c: (talk.empty if c in excluded else m) for c, m in masks.items()}
        return probs, masks

    def _masks(self, talk: CaseTalk, predictor: Predictor, concepts: tuple[str, ...]) -> dict[str, np.ndarray]:
        predictor.masks(concepts)
        masks = self._labelling(talk, predictor)[1]
        return {c: masks[c] for c in concepts}

    def _measure(self, talk: CaseTalk, predictor: Predictor, concept: str,
                 locator: AtlasLocator | None) -> TargetMeasurement:
        if concept not in talk.measured:
            probs, masks = self._labelling(talk, predictor)
            # Lesions counted as a radiologist would: sub-regions per parent lesion
            talk.measured[concept] = measure_target(
                concept, probs[concept], talk.case.affine, locator=locator,
                threshold=self.threshold, mask=masks[concept], **lesion_masks(concept, masks))
        return talk.measured[concept]

    def _case_fact(self, talk: CaseTalk, predictor: Predictor, fact: case_facts.CaseFact) -> None:
        """Compute a case fact once per case (failures are said in the answer, never raised)."""
        if fact.name in talk.facts or f"{fact.name}_error" in talk.facts:
            return
        _, masks = self._labelling(talk, predictor)
        talk.facts.update(case_facts.compute(fact, case_facts.FactInputs(
            images=talk.case.images, affine=talk.case.affine, locator=self._locator(talk),
            locator_failed=talk.locator_failed, masks=masks)))

    def _locator(self, talk: CaseTalk) -> AtlasLocator | None:
        """Fit the atlas registration once per case; on failure, answer without location."""
        if talk.locator is None and talk.locator_failed is None:
            seq = next(s for s in LOCATOR_SEQUENCES if s in talk.case.images)
            try:
                talk.locator = AtlasLocator.fit(talk.case.images[seq], talk.case.affine)
            except VlsegError as e:
                talk.locator_failed = str(e)
        return talk.locator

    def _with_intervals(self, talk: CaseTalk, predictor: Predictor,
                        measured: dict[str, TargetMeasurement], rel: Relations | None,
                        level: float) -> tuple[dict[str, JsonObject], JsonObject | None]:
        """answer.json entries of the measured targets and relations, with
        ``volume_ml_interval`` per target and ``<ratio>_interval`` per ratio at ``level``."""
        cal, affine, known = self._calibration(predictor), talk.case.affine, talk.intervals
        probs, masks = self._labelling(talk, predictor)
        out: dict[str, JsonObject] = {}
        when = talk.timepoint.assumed if talk.timepoint is not None else None
        for c, m in measured.items():
            j = measurement_to_json(m)
            j["name"] = vocab.display_name(c, when)
            if (c, level) not in known:
                known[(c, level)] = cal.volume_interval(c, probs[c], masks[c], affine, level)
            lo, hi = known[(c, level)]  # type: ignore[misc]
            j["volume_ml_interval"] = [round_ml(lo), round_ml(hi)]
            j["possibly_none"] = possibly_none(j["volume_ml_interval"])
            out[c] = j
        rel_json = relations_to_json(rel)
        if rel_json is not None:
            fractions: JsonObject = {}
            for key, value in rel_json["fractions"].items():  # every "of the whole / core" phrasing
                if value is None:
                    continue
                if (key, level) not in known:
                    known[(key, level)] = cal.ratio_interval(key, probs, masks, affine, level)
                iv = known[(key, level)]
                if iv is not None:
                    fractions[key] = [round_fraction(iv[0]), round_fraction(iv[1])]
            rel_json["fraction_intervals"] = fractions
            for name in vocab.ratios():
                if rel_json.get(name) is None:
                    continue
                if (name, level) not in known:
                    known[(name, level)] = cal.ratio_interval(name, probs, masks, affine, level)
                iv = known[(name, level)]
                rel_json[f"{name}_interval"] = None if iv is None else [round_fraction(iv[0]),
                                                                         round_fraction(iv[1])]
        return out, rel_json

    def _answer(self, talk: CaseTalk, predictor: Predictor, parse: Parse, text: str,
                measurements: list[TargetMeasurement], rel: Relations | None,
                timing: dict[str, float], model: ModelInfo, *, target_json: dict[str, JsonObject],
                relations_json: JsonObject | None) -> Answer:
        masks = self._masks(talk, predictor, tuple(m.concept for m in measurements)) if measurements else {}
        targets: list[JsonObject] = []
        masks_src: dict[str, np.ndarray] = {}
        masks_ras: dict[str, np.ndarray] = {}
        for ref, m in zip(parse.targets, measurements):
            # The mask that was measured: p >= threshold, specks below the minimum lesion removed.
            masks_ras[m.concept] = masks[m.concept].astype(np.uint8)
            masks_src[m.concept] = talk.case.to_source(masks_ras[m.concept])
            entry = _target_json(ref, target_json.get(m.concept) or measurement_to_json(m))
            entry["stages"] = list(predictor.stages(m.concept))  # which stages made this mask
            targets.append(entry)
        refinement = predictor.refinement() if predictor.refines else None
        return Answer(
            query=parse.query, text=text, refused=parse.refused, intent=parse.intent,
            targets=targets, masks=masks_src, masks_ras=masks_ras, relations=rel,
            warnings=list(talk.warnings), sequences_used=list(talk.case.present), model=model,
            timing_s=timing, case_id=talk.case.case_id, parse=parse,
            measurements=list(measurements), case_facts=dict(talk.facts),
            relations_json=relations_json, case=talk.case,
            probabilities_ras=self._probabilities(talk, predictor, tuple(masks_ras)),
            temperatures={c: self._calibration(predictor).temperature(c) for c in masks_ras},
            refinement=refinement.to_json() if refinement is not None else (
                {"ran": False, "reason": "not needed by this question"} if predictor.refines else None))

    def _probabilities(self, talk: CaseTalk, predictor: Predictor,
                       concepts: tuple[str, ...]) -> dict[str, np.ndarray | None]:
        """The predictor's per-voxel probabilities of the answered concepts, by reference (no
        copy; None where the time point rules the concept out, as its empty mask)."""
        if not concepts:
            return {}
        probs, masks = self._labelling(talk, predictor)
        return {c: (None if talk.empty is not None and masks[c] is talk.empty else probs[c])
                for c in concepts}


# ----------------------------------------------------------------------------- answer text


def _join_names(codes: tuple[str, ...] | list[str]) -> str:
    return " and the ".join(vocab.name(c) for c in codes)


def answer_text_parts(parts: list[tuple[Intent, Facts]], *, sequences_used: list[str],
                      notes: tuple[str, ...] = (), calibrated: bool = True) -> str:
    """The answer to one or several questions (a compound query), each part by its intent's
    composer in the order asked, then the closing lines once (``calibrated``: whether the
    intervals quoted come from a calibration file, for the line that explains them)."""
    lines: list[str] = []
    for spec, facts in parts:
        if spec.measures and not facts.targets and spec.min_targets < 2:
            lines.append("No target region was named. " + capabilities_text())
        elif spec.name == "refuse" and len(parts) > 1:  # one part of a compound question
            lines.append(spec.compose(facts)[0])
        else:
            said = [line for line in spec.compose(facts) if line.strip()]
            if not said and facts.targets:  # never an empty answer: say at least what was measured
                said = get_intent("volume").compose(facts)
            lines.extend(line for line in said if line not in lines)
    grounded = any(spec.measures for spec, _ in parts)
    confidence = next((f.confidence for _, f in parts if f.confidence is not None), None)
    return finish(lines, sequences_used=sequences_used, grounded=grounded, notes=notes,
                  confidence=confidence, calibrated=calibrated)


def reply_text(spec: Intent, *, reason: str | None = None) -> str:
    """The answer to a question that measures nothing (help, or a refusal with its reason)."""
    if spec.measures:
        raise ValueError("reply_text is for help and refused questions only")
    return answer_text_parts([(spec, Facts(reason=reason))], sequences_used=[])


def _target_json(ref: TargetRef, measured: JsonObject) -> JsonObject:
    """answer.json entry for one target: the rounded measurement (the exact values the answer
    text quotes, intervals included) plus the phrase and mask file name."""
    concept = measured["concept"]
    out: JsonObject = {"concept": concept, "phrase": ref.phrase,
                       "parse_score": round(float(ref.score), 3), "mask": f"{concept}.nii.gz"}
    out.update(measured)
    return out


__all__ = ["Dialogue", "CaseTalk", "answer_text_parts", "reply_text"]
