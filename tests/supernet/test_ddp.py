"""Data-parallel supernet training: two gloo processes (as under torchrun) equal one process
that splits every batch into the same two shards; CUDA runs the same code where present."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas.supernet import SupernetConfig, read_checkpoint, train_supernet
from search_spaces import get_space

# SGD: its update is linear in the gradient, so float summation order (two processes vs one)
# stays at rounding level; AdamW divides near-zero gradients by their own size.
SETTINGS = dict(epochs=1, img=64, batch=8, random_subnets=1, calib_images=8, activation="relu", shards=2,
                optimizer="sgd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train_supernet(get_space("yolov7-tiny", nc=3), data, out, SupernetConfig(**SETTINGS))
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_data, tmp_path):
    single = tmp_path / "single.pt"
    train_supernet(get_space("yolov7-tiny", nc=3), tiny_data, single, SupernetConfig(**SETTINGS))
    parallel = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), tiny_data, str(parallel)), nprocs=2, join=True)
    a, b = read_checkpoint(single), read_checkpoint(parallel)
    assert b["meta"]["complete"] and b["meta"]["settings"]["shards"] == 2
    params = [k for k in a["state_dict"] if not k.endswith(("running_mean", "running_var",
                                                            "num_batches_tracked"))]
    from nas.supernet import Supernet
    init = Supernet(get_space("yolov7-tiny", nc=3), "relu").state_dict()
    moved = 0
    for key in params:
        x, y, x0 = a["state_dict"][key], b["state_dict"][key], init[key]
        update = (x - x0).abs().max().item()
        moved += update > 1e-4
        # float summation order differs (per-process sums, then an all-reduce): a tensor whose
        # per-piece gradients nearly cancel (weight decay on) barely moves and keeps an absolute
        # rounding error of ~1e-4 of its scale; a process that skipped the all-reduce would be
        # off by about half of the update
        assert (x - y).abs().max().item() <= 0.02 * update + 1e-4 * x0.abs().max().item() + 1e-6, key
    assert moved > len(params) // 2     # training moved the weights: not two untouched inits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_and_scoring_use_the_same_code(tiny_data, tmp_path):
    out = tmp_path / "cuda.pt"
    result = train_supernet(get_space("yolov7-tiny", nc=3), tiny_data, out,
                            SupernetConfig(**{**SETTINGS, "shards": 1, "device": "cuda"}))
    assert read_checkpoint(out)["meta"]["complete"] and result.map50_95_largest >= 0
