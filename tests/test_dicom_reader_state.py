"""A DICOM reader owns what it mapped (grid plans, scanned studies): bounded, released with the
reader, nothing kept at module level; a case knows its study however its series were given."""
from __future__ import annotations

import gc
import shutil
import weakref

import pytest
from dicom_cases import mixed_grid_study, phantom_images, study

import vlseg.io.dicom as dicom
import vlseg.io.dicom_study as dicom_study
from vlseg.io import load_case
from vlseg.io.dicom import DicomReader
from vlseg.io.dicom_case import resolve_study
from vlseg.io.study import BoundedCache, StudySource


@pytest.fixture(scope="module")
def images(phantom_case_2mm):
    return phantom_images(phantom_case_2mm)


@pytest.fixture(scope="module")
def mixed(images, tmp_path_factory):
    return mixed_grid_study(images, tmp_path_factory.mktemp("state") / "mixed")[0]


def test_a_reader_plan_is_its_own_bounded_and_released_with_it(mixed, images, tmp_path):
    reader = DicomReader(studies=1, series=4)
    src = reader.study(mixed)
    assert isinstance(src, StudySource) and src.reference == "t1c"
    assert src.resampled == ("t1n", "t2w", "t2f") and src.folder == mixed
    flair = src.paths["t2f"]
    on_t1c = reader.read_header(flair).grid
    assert on_t1c.shape == reader.read_header(src.paths["t1c"]).grid.shape
    # Another reader never saw the plan: it reads the FLAIR on its own (thick-slice) grid.
    assert DicomReader().read_header(flair).grid.shape != on_t1c.shape
    study_ref = weakref.ref(reader.series_of(flair)[1])
    # Mapping a second study (4 series) pushes the first one's plans out of the bound of 4.
    other = study(images, tmp_path / "other", seed="other")
    assert reader.study(other).resampled == ()
    assert reader.read_header(flair).grid.shape != on_t1c.shape
    assert study_ref() is None  # evicted: no series or study of it is kept
    # Released with the reader.
    kept = weakref.ref(reader.series_of(reader.study(other).paths["t1c"])[1])
    del reader
    gc.collect()
    assert kept() is None


def test_no_module_holds_dicom_state():
    for module in (dicom, dicom_study):
        for name in ("_PLAN", "_PLAN_LOCK", "_MAPPED", "_CACHE", "_CACHE_LOCK"):
            assert not hasattr(module, name), f"{module.__name__}.{name}"
        held = [n for n, v in vars(module).items()
                if isinstance(v, (BoundedCache, dicom_study.StudyScans, DicomReader))]
        assert held == [], module.__name__


def test_bounded_cache_keeps_the_most_recent():
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_a_case_knows_its_study_from_the_folder_or_its_series_paths(mixed, images, tmp_path):
    case = load_case(resolve_study(mixed, reference="t2f"))  # uploads and --series give paths
    assert case.study.reference == "t2f" and case.study.resampled == ("t1n", "t1c", "t2w")
    assert case.study.labels["t2f"].startswith("#3") and set(case.study.paths) == set(case.present)
    # Series given one by one, never mapped as a study: all on one grid, nothing resampled.
    nested = study(images, tmp_path / "nested", seed="nested", layout="nested")
    paths = DicomReader().study(nested).paths  # a throwaway reader: the registered one never mapped it
    one_by_one = tmp_path / "series"
    for seq in ("t1c", "t2f"):
        shutil.copytree(paths[seq], one_by_one / seq)
    case = load_case({"t2f": one_by_one / "t2f", "t1c": one_by_one / "t1c"})
    assert case.study.reference == "t1c" and case.study.resampled == ()
    assert case.study.reference_path == one_by_one / "t1c" and case.study.folder is None
