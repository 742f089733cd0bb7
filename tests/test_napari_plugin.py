"""The napari plugin, headless: the widget is a real Qt widget on the offscreen platform
(pytest-qt's ``qtbot``) inside a real napari viewer made by napari's own ``make_napari_viewer``
fixture, its OpenGL canvas included. The offscreen platform draws OpenGL through an X server, so
the tests run under Xvfb (started by pytest-xvfb; ``.ci/run`` installs the Debian package
``xvfb``). Where no Xvfb is installed those tests skip with that reason and the same checks run
on napari's ``ViewerModel`` (the viewer without its canvas), so the plugin is tested either way.
Open a case or use the image layers already loaded, ask, get one Labels layer named after the
concepts in the vocabulary's colours and the answer text in the widget; the npe2 manifest is
valid."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="the napari extra is not installed (pip install vlseg[napari])")

from vlseg import vocab  # noqa: E402

QUERY = "segment the whole tumor and the necrotic core"


@pytest.fixture(scope="module")
def segmenter(random_checkpoint):
    from vlseg.segmenter import Segmenter

    return Segmenter.from_pretrained(random_checkpoint)


def _check_layer(viewer, widget, answer, shape):
    from napari.layers import Labels

    layer = viewer.layers["vlseg: WT + NCR"]
    assert isinstance(layer, Labels) and layer.data.shape == shape
    concepts = layer.metadata["vlseg"]["concepts"]
    assert concepts == {1: "WT", 2: "NCR"}
    for value, concept in concepts.items():
        assert np.allclose(layer.colormap.map(np.array([value]))[0][:3],
                           np.array(vocab.concept(concept).color) / 255, atol=1e-3)
    # Every voxel of a mask is labelled with it or with a region painted over it.
    for value, concept in concepts.items():
        inside = layer.data[answer.masks_ras[concept] > 0]
        assert set(np.unique(inside)) <= set(concepts)
    assert np.array_equal(layer.data == 2, (answer.masks_ras["NCR"] > 0) &
                          ((answer.masks_ras["NCR"].sum() <= answer.masks_ras["WT"].sum())
                           | (answer.masks_ras["WT"] == 0)))
    assert widget.answer.toPlainText() == answer.text and answer.text
    if hasattr(viewer, "screenshot"):  # the real viewer: the canvas draws the masks
        viewer.dims.set_point(0, float(np.argwhere(layer.data > 0).mean(axis=0)[0]))
        viewer.reset_view()
        shown = viewer.screenshot(canvas_only=True, flash=False)
        layer.visible = False
        hidden = viewer.screenshot(canvas_only=True, flash=False)
        layer.visible = True
        assert shown.shape == hidden.shape and np.any(shown[..., :3] != hidden[..., :3])


@pytest.fixture(params=["napari.Viewer", "ViewerModel"])
def viewer(request, xvfb):
    """napari's real viewer (``make_napari_viewer``, OpenGL canvas under Xvfb), and its model."""
    if request.param == "ViewerModel":
        from napari.components import ViewerModel

        return ViewerModel()
    if xvfb is None and not os.environ.get("DISPLAY"):
        pytest.skip("no X server for napari's OpenGL canvas: install Xvfb (Debian package xvfb); "
                    "pytest-xvfb starts it")
    made = request.getfixturevalue("make_napari_viewer")(show=True)  # shown on the offscreen platform: nothing on a screen, but the canvas draws
    assert made.window.qt_viewer.canvas is not None  # the OpenGL canvas exists and draws
    return made


def test_open_a_case_and_ask(qtbot, viewer, segmenter, phantom_case_2mm):
    from vlseg.napari.widget import VlsegWidget

    widget = VlsegWidget(viewer, segmenter=segmenter)
    qtbot.addWidget(widget)
    assert widget.ask(QUERY) is None and "Open a case" in widget.answer.toPlainText()
    assert not widget.open_case(str(phantom_case_2mm / "nothing-here"))
    assert widget.answer.toPlainText().startswith("Could not open the case")
    assert widget.open_case(str(phantom_case_2mm))
    assert {"t1n", "t1c", "t2w", "t2f"} <= {layer.name for layer in viewer.layers}
    widget.question.setText(QUERY)
    widget.question.returnPressed.emit()  # typing the question and pressing Enter asks it
    answer = widget.last_answer
    _check_layer(viewer, widget, answer, segmenter.case.shape)
    widget.ask(QUERY)  # asked again: the layer is replaced, not duplicated
    assert [layer.name for layer in viewer.layers].count("vlseg: WT + NCR") == 1


def test_use_the_image_layers_already_loaded(qtbot, viewer, segmenter, phantom_case_2mm):
    import nibabel as nib

    from vlseg.napari.widget import VlsegWidget

    name = phantom_case_2mm.name
    for seq, layer_name in (("t1c", "T1ce"), ("t2f", "flair")):
        img = nib.load(phantom_case_2mm / f"{name}-{seq}.nii.gz")
        viewer.add_image(np.asarray(img.dataobj, dtype=np.float32), name=layer_name, affine=img.affine)
    viewer.add_image(np.zeros((8, 8), np.float32), name="notes")  # not a sequence: ignored
    widget = VlsegWidget(viewer, segmenter=segmenter)
    qtbot.addWidget(widget)
    assert widget.use_layers(), widget.answer.toPlainText()
    assert segmenter.case.present == ("t1c", "t2f") or list(segmenter.case.present) == ["t1c", "t2f"]
    answer = widget.ask(QUERY)
    _check_layer(viewer, widget, answer, segmenter.case.shape)


def test_manifest_is_valid_and_names_the_widget():
    from npe2 import PluginManifest

    import vlseg.napari

    manifest = PluginManifest.from_file(Path(vlseg.napari.__file__).parent / "napari.yaml")
    (command,) = manifest.contributions.commands
    assert command.python_name == "vlseg.napari.widget:VlsegWidget"
    assert manifest.contributions.widgets[0].command == command.id
    module, attr = command.python_name.split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), attr))
