"""Population-informed alignment (``pas-population``): one map, fitted once across people, from a person's known
answers to what their gates should predict for *any* statement, in the model's own state space.

The map is bilinear and fitted by ridge in closed form::

    response[p, j] - 3  ~  a_p^T B z_j

- ``a_p = [1, known responses - 3]`` (a skipped item counts 0, i.e. "Neither"): the person;
- ``z_j``: the statement as the model holds it: the head outputs of the gated layer at the answer position,
  standardised and projected on their first ``k`` principal components (fitted on the statements alone,
  no answers);
- ``B [1 + known, k]``: learned across people. Only two sums over people are needed, ``A^T A`` and
  ``A^T Y`` (:class:`AnswerStats`), so 300,000 people stream through in seconds.

Known statements are also targets (``setting="short"``: the only targets, as in PAPI-120, where nobody
answered the test statements; ``"full"``: all 300). A known statement is learned as the test statements
will be used, *without the person's own answer to it*: the known items are split in
:data:`ITEM_FOLDS` folds and each fold's targets are predicted from ``a_p`` with that fold zeroed.

A new person's vector is then a closed-form function of their answers (:meth:`PopulationMap.vector`):
one map per head of the gated layer (:class:`pas.population.bilinear.HeadMaps`), so each head's readout
``B_h^T a_p`` predicts the whole answer and becomes that head's gate, as in pas-gated
(:mod:`pas.fit.gated`'s pushes: a letter tilt on the gated layer, the answer-preference correction below
it). The statements' states are read with that correction on, as the gates will read them. The map's
shape (components, ridge) is chosen by cross-validation across its own people, and the gates' gain and
shift on its own people's known answers, out of item fold, with the steered model (:func:`choose_gain`):
nothing is searched per person.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pas.core.data import Subject
from pas.population.bilinear import (
    NEUTRAL,
    AnswerStats,
    HeadMaps,
    StatementBasis,
    item_folds,
    select_shape,
    target_ids,
    unseen_fold_maps,
)
from pas.score.cache import ScorerCache
from pas.score.metric import objective
from pas.steer.gates import Gates
from pas.steer.signature import ModelSignature

if TYPE_CHECKING:
    from pas.population.source import PeopleSource
    from pas.score.scorer import ItemScorer
    from pas.steer.vector import SteeringVector

DEFAULT_LAYER = -1  # the gated layer (the last, as pas-gated), whose head outputs describe a statement
DEFAULT_RIDGE = 1e5
GAINS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
SHIFTS: tuple[float, ...] = (-0.5, 0.0, 0.5)
FORMAT = "pas-population-map/1"


@dataclass(frozen=True)
class PopulationMap:
    """A fitted map and what turns its readout into a gated vector (the pushes of the gated layer).

    ``people``: how many people it learned from; ``excluded``: the cases it was cross-fitted without
    (evaluation); ``bank``: the item bank's fingerprint; ``population``: a digest of the people's cases.
    """

    layer: int
    known_ids: tuple[int, ...]
    maps: HeadMaps
    tilt: torch.Tensor  # [H, D] on layer
    correction: torch.Tensor  # [H, D] on layer - 1
    signature: ModelSignature
    setting: str = "short"
    ridge: float = DEFAULT_RIDGE
    gain: float = 2.0
    shift: float = 0.0
    people: int = 0
    bank: str | None = None
    population: str | None = None
    excluded: tuple[str, ...] = ()

    @property
    def components(self) -> int:
        return int(self.maps.coefs.shape[2])

    def person(self, responses: Mapping[int, int]) -> np.ndarray:
        """``a_p``: ``[1, known responses - 3]``, a skipped item 0."""
        return np.array([1.0] + [responses[i] - NEUTRAL if i in responses else 0.0 for i in self.known_ids])

    def readouts(self, responses: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(w [H, D], b [H])``: head ``h`` predicts the person's response to a statement as ``x_h @ w_h + b_h``."""
        return self.maps.readouts(self.person(responses))

    def vector(self, subject: Subject, gain: float | None = None, shift: float | None = None) -> SteeringVector:
        """The person's gated vector, in closed form from their known answers (nothing else of theirs is read)."""
        from pas.fit.gated import gate_tables
        from pas.steer.vector import Provenance, SteeringVector

        gain = self.gain if gain is None else gain
        shift = self.shift if shift is None else shift
        known = {i: subject.responses[i] for i in self.known_ids if i in subject.responses}
        w, b = self.readouts(known)
        weights, bias, offsets = gate_tables(torch.as_tensor(w, dtype=torch.float32),
                                             torch.as_tensor(b, dtype=torch.float32), self.layer, self.tilt,
                                             self.correction, self.signature.shape, gain, shift)
        provenance = Provenance(subject=subject.case, method="pas-population", bank=self.bank,
                                config={"setting": self.setting, "layer": self.layer, "gain": gain, "shift": shift,
                                        "ridge": self.ridge, "components": self.components, "people": self.people,
                                        "population": self.population})
        return SteeringVector(offsets, self.signature, Gates(weights, bias), "last", provenance)

    def save(self, path: str | Path) -> Path:
        """A safetensors file: the tensors, and the rest as JSON metadata (validated by :meth:`load`)."""
        from safetensors.torch import save_file

        path = Path(path)
        bases = self.maps.bases
        arrays = {"mean": np.stack([b.mean for b in bases]), "scale": np.stack([b.scale for b in bases]),
                  "components": np.stack([b.components for b in bases]), "coefs": self.maps.coefs}
        out = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float64) for k, v in arrays.items()}
        out.update(tilt=self.tilt.contiguous(), correction=self.correction.contiguous())
        meta = {k: getattr(self, k) for k in ("layer", "known_ids", "setting", "ridge", "gain", "shift", "people",
                                              "bank", "population", "excluded")}
        meta["signature"] = dataclasses.asdict(self.signature)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, str(path), metadata={"format": FORMAT, "map": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> PopulationMap:
        """A map saved by :meth:`save`; a clear error for another file or a damaged one."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as e:  # noqa: BLE001 (safetensors raises several kinds)
            raise ValueError(f"{path} is not a readable population map ({e}); fit one with pas population-map") \
                from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a population map (format {meta.get('format')!r}, expected {FORMAT!r}); "
                             "a steering vector is loaded with SteeringVector.load")
        m = json.loads(meta["map"])
        arr = {k: tensors[k].numpy() for k in ("mean", "scale", "components", "coefs")}
        bases = tuple(StatementBasis(mu, sc, c) for mu, sc, c in zip(arr["mean"], arr["scale"], arr["components"],
                                                                      strict=True))
        out = cls(int(m["layer"]), tuple(m["known_ids"]), HeadMaps(bases, arr["coefs"]), tensors["tilt"].float(),
                  tensors["correction"].float(), ModelSignature.from_json(m["signature"]), m["setting"],
                  float(m["ridge"]), float(m["gain"]), float(m["shift"]), int(m["people"]), m["bank"],
                  m["population"], tuple(m["excluded"]))
        if out.maps.coefs.shape[1] != 1 + len(out.known_ids) or len(bases) != out.signature.shape[1]:
            raise ValueError(f"{path}: coefficients of shape {out.maps.coefs.shape} do not fit {len(out.known_ids)} "
                             f"known items and {out.signature.shape[1]} heads; the file is damaged")
        return out


def statement_states(scorer: ItemScorer, layer: int, correction: torch.Tensor | None = None,
                     ids: Sequence[int] | None = None) -> np.ndarray:
    """``[N, H, D]``: the head outputs of ``layer`` at the answer position of each statement (no answers), with the
    answer-preference ``correction [H, D]`` on ``layer - 1`` applied: what the gates will read, since the
    correction is always on below them. Remembered by the scorer."""
    from pas.fit.activations import answer_states
    from pas.steer.vector import SteeringVector

    ids = tuple(it.id for it in scorer.bank.items) if ids is None else tuple(ids)
    if correction is None:
        return answer_states(scorer, ids).heads[:, layer].double().numpy()
    key = (layer, ids, correction.numpy().tobytes())

    def corrected() -> np.ndarray:
        offsets = torch.zeros(ModelSignature.of(scorer.model).shape)
        offsets[layer - 1] = correction
        vector = SteeringVector.for_model(scorer.model, offsets)
        return answer_states(scorer, ids, steering=vector).heads[:, layer].double().numpy()

    return CORRECTED_STATES.get(scorer, key, corrected)


CORRECTED_STATES: ScorerCache[tuple, np.ndarray] = ScorerCache("statement states under the correction")


def fit_map(scorer: ItemScorer, people: Sequence[Subject] | AnswerStats, setting: str = "short", *,
            layer: int = DEFAULT_LAYER, components: int | None = None, ridge: float | None = None,
            choose: Sequence[Subject] = (), excluded: Sequence[str] = (), population: str | None = None,
            gain: float | None = None, shift: float | None = None) -> PopulationMap:
    """Fit the map on ``people`` (or their :class:`AnswerStats`). Its shape (components, ridge), where not given,
    is chosen by cross-validation across ``choose``; its gain and shift on ``choose``'s known answers (the
    map's own people, a sample; none: components and ridge must be given, gain 2 and shift 0), unless given."""
    from pas.fit.gated import calibrations, pushes

    bank = scorer.bank
    layer = layer % ModelSignature.of(scorer.model).shape[0]
    if layer < 1:
        raise ValueError("the gated layer needs a layer below it for the answer-preference correction")
    targets = target_ids(bank, setting)
    stats = people if isinstance(people, AnswerStats) else AnswerStats.empty(bank.train_ids, targets).add(people)
    if stats.people < 2:
        raise ValueError(f"a population map needs people to learn from; got {stats.people}")
    tilt, correction = pushes(calibrations(scorer, bank.train_ids, False), layer)
    x = statement_states(scorer, layer, correction)
    if components is None or ridge is None:
        if not choose:
            raise ValueError("give components and ridge, or people to choose them on (choose=)")
        k, lam, _ = select_shape(choose, x, bank, setting)
        components, ridge = components or k, ridge or lam
    where = {it.id: n for n, it in enumerate(bank.items)}
    maps = HeadMaps.fit(stats, x, [where[i] for i in stats.target_ids], components, ridge)
    pmap = PopulationMap(layer, tuple(stats.known_ids), maps, tilt, correction, ModelSignature.of(scorer.model),
                         setting, ridge, people=stats.people, bank=bank.fingerprint(), population=population,
                         excluded=tuple(excluded))
    if gain is None and shift is None and choose:
        unseen = unseen_fold_maps(stats, x, where, components, ridge)
        gain, shift = choose_gain(scorer, pmap, choose[:GAIN_PEOPLE], unseen)
    return dataclasses.replace(pmap, gain=pmap.gain if gain is None else gain,
                               shift=pmap.shift if shift is None else shift)


def choose_gain(scorer: ItemScorer, pmap: PopulationMap, people: Sequence[Subject],
                unseen: Sequence[HeadMaps] | None = None, gains: Sequence[float] = GAINS,
                shifts: Sequence[float] = SHIFTS) -> tuple[float, float]:
    """The (gain, shift) whose steered answers best match ``people``'s known answers by the one validation objective
    averaged over them: the map's own people, never the person it is used for. Each known item is answered by
    the steered model with the person's vector made without that item's fold of answers, and (``unseen``, one
    per item fold) by a map that never learned those statements, as the test statements will be met."""
    from pas.score.many import encoded_logits_many
    from pas.score.scorer import keep_trunk, to_distribution

    ids = list(pmap.known_ids)
    folds = item_folds(ids)
    full = keep_trunk(scorer.model, scorer.encode(ids), scorer.letter_ids, pmap.layer - 1)  # once; folds pick rows
    grid = [(g, s) for g in gains for s in shifts]
    totals = np.zeros(len(grid))
    for person in people:
        logits = torch.empty(len(grid), len(ids), 6)
        for f in np.unique(folds):
            cols = np.flatnonzero(folds == f)
            masked = dict(person.responses)
            for c in cols:
                masked.pop(ids[c], None)
            stand_in = dataclasses.replace(person, responses=masked)
            fold_map = pmap if unseen is None else dataclasses.replace(pmap, maps=unseen[int(f)])
            vectors = [fold_map.vector(stand_in, g, s) for g, s in grid]
            logits[:, torch.as_tensor(cols)] = encoded_logits_many(scorer.model, full.select(cols.tolist()),
                                                                   scorer.letter_ids, vectors)
        for k in range(len(grid)):
            totals[k] += objective(scorer.bank, person, ids, to_distribution(logits[k])).composite
    best = min(range(len(grid)), key=lambda k: (round(float(totals[k]), 9), abs(grid[k][0]), abs(grid[k][1])))
    return grid[best]


CROSS_FOLDS = 5  # people folds of a cross-fitted evaluation
CHOOSE_PEOPLE = 256  # the most of the map's own people its shape is chosen on
GAIN_PEOPLE = 16  # the map's own people its gain and shift are chosen on (steered passes: costly)


def person_fold(case: str, folds: int = CROSS_FOLDS) -> int:
    """A person's fold in a cross-fitted evaluation: from their case id alone (stable across runs and orders)."""
    import hashlib

    return int(hashlib.sha256(case.encode()).hexdigest()[:8], 16) % folds


def cross_fitted_map(scorer: ItemScorer, population: Sequence[Subject], subject: Subject, setting: str = "short",
                     **fit: Any) -> PopulationMap:
    """The map used for ``subject`` in an evaluation: fitted on the people of the other folds only, so it never
    saw the person (nor anyone of their fold); made once per fold and remembered by the scorer."""
    import hashlib

    fold = person_fold(subject.case)
    others = [s for s in population if person_fold(s.case) != fold]
    learned = [(s.case, sorted(s.responses.items())) for s in others]  # what the map may learn from
    cases = hashlib.sha256(json.dumps(learned).encode()).hexdigest()[:16]
    key = (setting, fold, cases, tuple(sorted(fit.items())))

    def make() -> PopulationMap:
        excluded = tuple(s.case for s in population if person_fold(s.case) == fold)
        return fit_map(scorer, others, setting, choose=others[:CHOOSE_PEOPLE], excluded=excluded,
                       population=key[2], **fit)

    pmap = CROSS_MAPS.get(scorer, key, make)
    if subject.case not in pmap.excluded:
        raise AssertionError(f"the map for {subject.case} was fitted on them")  # person_fold is deterministic
    return pmap


CROSS_MAPS: ScorerCache[tuple, PopulationMap] = ScorerCache("cross-fitted population maps")


def fit_map_from_source(scorer: ItemScorer, source: PeopleSource, setting: str = "short", *,
                        first: int | None = None, skip_bad: bool = False,
                        progress: Callable[[int], None] | None = None, **fit: Any) -> PopulationMap:
    """Fit a map on every person of ``source`` (or its ``first``), a chunk at a time: only the answer sums are
    kept, so a population of any size fits in memory. Shape, gain and shift are chosen on its first
    :data:`CHOOSE_PEOPLE` people unless given."""
    import hashlib

    targets = target_ids(scorer.bank, setting)
    stats = AnswerStats.empty(scorer.bank.train_ids, targets)
    sample: list[Subject] = []
    digest = hashlib.sha256()
    for parsed in source.chunks():
        if parsed.bad and not skip_bad:
            bad = parsed.bad[0]
            raise ValueError(f"{source.origin}: row {bad.row} ({bad.case}): {bad.reason}; fix it, or skip bad rows")
        people = list(parsed.subjects)
        if first is not None:
            people = people[: max(0, first - stats.people)]
        stats.add(people)
        sample += people[: CHOOSE_PEOPLE - len(sample)]
        digest.update(json.dumps([s.case for s in people]).encode())
        if progress is not None:
            progress(stats.people)
        if first is not None and stats.people >= first:
            break
    return fit_map(scorer, stats, setting, choose=sample, population=digest.hexdigest()[:16], **fit)
