"""Shared fixtures of the training tests: a tiny width-reduced genome and a tiny dataset."""
from __future__ import annotations

import pytest
import torch

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.data import generate_synthetic
from nas.expand import expand
from nas.presets import PRESETS

NC = 3


def tiny_genome(nc: int = NC, scale: float = 0.25):
    """yolov7-tiny with every width × ``scale`` (rounded to 8, at least 8)."""
    g = PRESETS["yolov7-tiny"].map_fields(lambda _p, w: max(8, round(w * scale / 8) * 8))
    return g.replace(nc=nc)


def tiny_cfg(nc: int = NC, scale: float = 0.25):
    return parse_cfg(expand(tiny_genome(nc, scale)), source="tiny")


def tiny_model(nc: int = NC, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(nc))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 train / 8 val synthetic images at 96 px (3 classes); returns the data.yaml path."""
    out = tmp_path_factory.mktemp("synth")
    return generate_synthetic(out, n_train=16, n_val=8, img=96, seed=0, nc=NC, workers=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads competing with other
    processes run 10× slower (threads spin at barriers)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
