"""Fixtures of the supernet tests: the two spaces' supernets (built once) and a tiny dataset."""
from __future__ import annotations

import pytest

from search_spaces import get_space

NC = 3


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every supernet test on one thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def tiny_space():
    return get_space("yolov7-tiny", nc=NC)


@pytest.fixture(scope="session")
def tiny_supernet(tiny_space):
    from nas.supernet import Supernet

    return Supernet(tiny_space, "leakyrelu", seed=0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 train / 8 val synthetic images at 64 px (3 classes): the data.yaml path."""
    from nas.data import generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    return str(generate_synthetic(out, n_train=16, n_val=8, img=64, seed=0, nc=NC, workers=0))
