"""Sample cases for the app: synthetic phantoms written once (deterministic seeds), in the background.

The first start writes a few BraTS-2023-layout cases with ``vlseg.synth.write_case``; later starts
find them on disk. Generation runs in a daemon thread so the server answers at once; the UI shows
which samples are ready.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from vlseg.vocab import SEQUENCES

SampleWriter = Callable[..., Path]  # write_case(out_dir, seed, *, case_id=..., spacing_mm=...)


def _default_writer(out_dir: Path, seed: int, *, case_id: str, spacing_mm: float) -> Path:
    from vlseg.synth import write_case

    return write_case(out_dir, seed, case_id=case_id, spacing_mm=spacing_mm)


PairWriter = Callable[..., Path]  # write_pair(out_dir, base_seed, index) -> the pair's folder
PAIR_SEED = 2031  # sample pairs: PAIR-2031-00000 (progression), -00001 (new lesion), ...


def _default_pair_writer(out_dir: Path, base_seed: int, index: int) -> Path:
    from vlseg.synth.pairs import write_pair

    return write_pair(out_dir, base_seed, index)


class SampleLibrary:
    """Named sample cases in ``root``: ``sample-<k>`` generated from fixed seeds; and ``pairs``
    baseline/follow-up phantom pairs with a known change (``vlseg synth --pairs``) under
    ``root/pairs``, written after the cases."""

    def __init__(self, *, root: str | Path, seeds: tuple[int, ...], spacing_mm: float = 1.0,
                 writer: SampleWriter | None = None, pairs: int = 0,
                 pair_writer: PairWriter | None = None) -> None:
        if not seeds:
            raise ValueError("at least one seed is needed")
        if spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
        self.root = Path(root)
        self.seeds = tuple(int(s) for s in seeds)
        self.spacing_mm = float(spacing_mm)
        self._writer = writer or _default_writer
        if pairs < 0:
            raise ValueError(f"pairs must be >= 0, got {pairs}")
        self.n_pairs = int(pairs)
        self._pair_writer = pair_writer or _default_pair_writer
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # Names are fixed by position and seed so they are the same on every start.
    @property
    def names(self) -> list[str]:
        mm = f"{self.spacing_mm:g}mm"
        return [f"sample-{i + 1}-seed{seed}-{mm}" for i, seed in enumerate(self.seeds)]

    def path(self, name: str) -> Path:
        if name not in self.names:
            raise KeyError(name)
        return self.root / name

    def is_ready(self, name: str) -> bool:
        folder = self.root / name
        return all((folder / f"{name}-{s}.nii.gz").is_file() for s in SEQUENCES)

    def ready(self) -> list[str]:
        return [n for n in self.names if self.is_ready(n)]

    # Sample pairs: folder PAIR-<seed>-<index> with the two case folders and truth.json (last).
    @property
    def pair_names(self) -> list[str]:
        from vlseg.synth.followup import SCENARIOS

        return [f"pair-{i + 1}-{SCENARIOS[i % len(SCENARIOS)].replace('_', '-')}" for i in range(self.n_pairs)]

    def _pair_folder(self, index: int) -> Path:
        return self.root / "pairs" / f"PAIR-{PAIR_SEED:04d}-{index:05d}"

    def pair_paths(self, name: str) -> tuple[Path, Path]:
        """(baseline, follow-up) case folders of a sample pair."""
        if name not in self.pair_names:
            raise KeyError(name)
        folder = self._pair_folder(self.pair_names.index(name))
        return folder / f"{folder.name}-000", folder / f"{folder.name}-001"

    def pairs_ready(self) -> list[str]:
        return [n for i, n in enumerate(self.pair_names) if (self._pair_folder(i) / "truth.json").is_file()]

    def status(self) -> str:
        n_ready, n = len(self.ready()), len(self.names)
        if self.error:
            return f"sample generation failed ({self.error}); upload your own scans"
        pairs = f" and {len(self.pairs_ready())}/{self.n_pairs} sample pairs" if self.n_pairs else ""
        if n_ready == n and len(self.pairs_ready()) == self.n_pairs:
            return f"{n} sample cases" + (f" and {self.n_pairs} sample pairs" if self.n_pairs else "") + " ready"
        return f"generating sample cases: {n_ready}/{n}{pairs} ready"

    def generate(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Write every missing sample (idempotent; concurrent callers wait for each other)."""
        with self._lock:
            names = self.names
            for k, (name, seed) in enumerate(zip(names, self.seeds)):
                if not self.is_ready(name):
                    try:
                        self._writer(self.root, seed, case_id=name, spacing_mm=self.spacing_mm)
                    except Exception as e:  # noqa: BLE001 - reported in the UI, server keeps running
                        self.error = type(e).__name__
                        raise
                if progress is not None:
                    progress(k + 1, len(names))
            for i in range(self.n_pairs):
                if not (self._pair_folder(i) / "truth.json").is_file():
                    try:
                        self._pair_writer(self.root / "pairs", PAIR_SEED, i)
                    except Exception as e:  # noqa: BLE001 - reported in the UI
                        self.error = type(e).__name__
                        raise
            return self.ready()

    def start_background(self) -> None:
        """Generate missing samples in a daemon thread (no-op when all exist)."""
        if self._thread is not None or (len(self.ready()) == len(self.names)
                                        and len(self.pairs_ready()) == self.n_pairs):
            return

        def _run() -> None:
            try:
                self.generate()
            except Exception:  # noqa: BLE001 - status() reports it
                pass

        self._thread = threading.Thread(target=_run, name="vlseg-samples", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return len(self.ready()) == len(self.names) and len(self.pairs_ready()) == self.n_pairs
