"""The vlseg dock widget for napari: a case, a question, the masks as a Labels layer.

    widget = VlsegWidget(viewer)            # napari passes the viewer
    widget.open_case("BraTS-GLI-00000-000/")  # or widget.use_layers(): the loaded image layers
    widget.ask("segment the necrotic core and the edema")

The case is opened the one way everywhere (``Segmenter.set_case``); the answer is the dialogue's
(``Segmenter.ask``). Layers are shown in the case's RAS+ voxel order with the case's affine, so
they overlay the image layers this widget adds. Image layers the user loaded are read as one
sequence each (the layer's name says which) with the layer's affine.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextEdit, QVBoxLayout,
                            QWidget)

from vlseg import vocab
from vlseg.errors import VlsegError, one_line

if TYPE_CHECKING:
    import napari

    from vlseg.segmenter import Answer, SegmenterLike


def labels_of(answer: Answer) -> tuple[np.ndarray, dict[int, str]]:
    """The answer's masks as one (X, Y, Z) label volume in the case's RAS+ order and
    ``{value: concept}``; where regions overlap the smaller (inner) one is painted last, so it
    shows (the necrotic core inside the whole tumor)."""
    masks = answer.masks_ras
    if not masks:
        return np.zeros((1, 1, 1), np.uint8), {}
    values = {c: i for i, c in enumerate(masks, start=1)}
    out = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for concept in sorted(masks, key=lambda c: -int(np.count_nonzero(masks[c]))):
        out[np.asarray(masks[concept]) > 0] = values[concept]
    return out, {v: c for c, v in values.items()}


def layer_name(concepts: list[str]) -> str:
    return "vlseg: " + " + ".join(concepts) if concepts else "vlseg: (nothing)"


class VlsegWidget(QWidget):
    """Case, question, answer. ``segmenter``: a ready one (tests pass a small model); default:
    the bundled model, loaded at the first question."""

    def __init__(self, napari_viewer: napari.components.ViewerModel, *, segmenter: SegmenterLike | None = None,
                 model: str | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._segmenter = segmenter
        self._model = model
        self._affine: np.ndarray | None = None
        self.last_answer: Answer | None = None
        self.case_path = QLineEdit()
        self.case_path.setPlaceholderText("case folder or DICOM study folder")
        open_button = QPushButton("Open case")
        open_button.clicked.connect(lambda: self.open_case(self.case_path.text()))
        layers_button = QPushButton("Use image layers")
        layers_button.clicked.connect(lambda: self.use_layers())
        self.question = QLineEdit()
        self.question.setPlaceholderText('e.g. "segment the necrotic core"')
        self.question.returnPressed.connect(lambda: self.ask(self.question.text()))
        ask_button = QPushButton("Ask")
        ask_button.clicked.connect(lambda: self.ask(self.question.text()))
        self.answer = QTextEdit()
        self.answer.setReadOnly(True)
        row = QHBoxLayout()
        row.addWidget(open_button)
        row.addWidget(layers_button)
        layout = QVBoxLayout()
        for w in (QLabel("Case"), self.case_path):
            layout.addWidget(w)
        layout.addLayout(row)
        for w in (QLabel("Question"), self.question, ask_button, self.answer):
            layout.addWidget(w)
        self.setLayout(layout)

    # ----------------------------------------------------------------- case
    @property
    def segmenter(self) -> SegmenterLike:
        if self._segmenter is None:
            from vlseg.segmenter import Segmenter

            self._segmenter = Segmenter.from_pretrained(self._model)
        return self._segmenter

    def open_case(self, path: str) -> bool:
        """Open a case folder (or DICOM study) and show its sequences as image layers."""
        if not path.strip():
            return self._say("Give a case folder first.")
        try:
            summary = self.segmenter.set_case(path.strip())
        except VlsegError as e:
            return self._say(f"Could not open the case: {one_line(e)}")
        case = self.segmenter.case
        self._affine = case.affine
        for seq, image in case.images.items():
            self.viewer.add_image(image, name=seq, affine=case.affine, colormap="gray",
                                  blending="additive" if seq != "t1c" else "translucent",
                                  visible=(seq == "t1c" or len(case.images) == 1))
        return self._say(f"Opened {summary['case_id']}: {', '.join(summary['sequences'])}.")

    def use_layers(self) -> bool:
        """The image layers named as sequences (t1n, t1c, t2w, t2f, or t1, t1ce, t2, flair) as
        one case, read with each layer's affine."""
        import nibabel as nib

        layers = {}
        for layer in self.viewer.layers:
            seq = vocab.canonical_sequence(layer.name) if _is_sequence(layer.name) else None
            if seq is not None and getattr(layer, "data", None) is not None and \
                    np.asarray(layer.data).ndim == 3:
                layers[seq] = layer
        if not layers:
            return self._say("No image layer is named t1n, t1c, t2w or t2f.")
        tmp = Path(tempfile.mkdtemp(prefix="vlseg-napari-"))
        files = {}
        for seq, layer in layers.items():
            affine = np.asarray(layer.affine.affine_matrix, dtype=float)
            files[seq] = tmp / f"{seq}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(layer.data, dtype=np.float32), affine), files[seq])
        try:
            summary = self.segmenter.set_case({s: str(p) for s, p in files.items()})
        except VlsegError as e:
            return self._say(f"Could not use the layers: {one_line(e)}")
        finally:
            for p in files.values():
                p.unlink(missing_ok=True)
            tmp.rmdir()
        self._affine = self.segmenter.case.affine
        return self._say(f"Using layers {', '.join(summary['sequences'])}.")

    # ----------------------------------------------------------------- asking
    def ask(self, question: str):
        """Answer ``question`` about the case; the masks become (or replace) a Labels layer."""
        if self._affine is None:
            self._say("Open a case or use image layers first.")
            return None
        try:
            answer = self.segmenter.ask(question)
        except VlsegError as e:
            self._say(f"Could not answer: {one_line(e)}")
            return None
        self._say(answer.text)
        self.last_answer = answer
        if not answer.masks_ras:
            return answer
        data, concepts = labels_of(answer)
        name = layer_name(list(concepts.values()))
        colors = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
        for value, concept in concepts.items():
            r, g, b = vocab.concept(concept).color
            colors[value] = (r / 255, g / 255, b / 255, 1.0)
        from napari.utils.colormaps import DirectLabelColormap

        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_labels(data, name=name, affine=self._affine, opacity=0.6,
                                       colormap=DirectLabelColormap(color_dict=colors))
        layer.metadata["vlseg"] = {"concepts": concepts, "answer": answer.to_json()}
        return answer

    def _say(self, text: str) -> bool:
        self.answer.setPlainText(text)
        return not text.startswith(("Could not", "Give", "No image", "Open a case"))


def _is_sequence(name: str) -> bool:
    try:
        vocab.canonical_sequence(name)
        return True
    except (ValueError, KeyError):
        return False


__all__ = ["VlsegWidget", "labels_of", "layer_name"]
