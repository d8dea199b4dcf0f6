from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic dataset (16 train / 8 val images at 64 px): its data.yaml path."""
    from nas.data import synthetic_dataset

    return str(synthetic_dataset(cache_dir=tmp_path_factory.mktemp("data"), n_train=16, n_val=8, img=64))
