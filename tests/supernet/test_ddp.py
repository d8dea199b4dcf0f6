"""Data-parallel supernet training: two gloo processes started as ``torchrun`` starts them
(RANK, WORLD_SIZE, LOCAL_RANK in the environment) equal one process that splits every batch into
the same two shards; each process loads only its shard of every step; rank 0 scores the result
while the others return; every collective's tensor lives on the group's device; a run whose
rank was killed resumes from the last checkpoint. CUDA runs the same code where present."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas.data import load_data_config, make_loader, scan_split
from nas.supernet import SupernetConfig, SupernetError, read_checkpoint, train_supernet
from nas.supernet._train import RankBatches, collective_device, process_device
from search_spaces import get_space

# SGD: its update is linear in the gradient, so float summation order (two processes vs one)
# stays at rounding level; AdamW divides near-zero gradients by their own size. Two steps, as
# more let SimOTA's discrete assignments drift apart: batch 15 of 16 images, so the last step
# has one image and one process an empty share of it.
SETTINGS = dict(epochs=1, img=64, batch=15, random_subnets=1, calib_images=8, activation="relu", shards=2,
                optimizer="sgd")
SCORE_SLEEP = 2.0          # rank 0's scoring is slowed down by this much per sub-network
DEADLINE = 150.0           # seconds a 2-process run may take before the test calls a rank stuck


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, settings: dict, records: str,
            kill_after: int | None) -> None:
    """One process as torchrun starts it; it records what it loaded, the devices of its
    collectives' tensors and when it returned in ``records``/rank{rank}.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import nas.supernet._train as train_module
    from nas.data import YoloDataset

    loaded, devices, scores = [], [], []
    get_item, all_reduce, score = YoloDataset.__getitem__, dist.all_reduce, train_module.OneShotScorer.score

    def spy_get_item(self, key):
        if self.augment is not None:          # the training loader (calibration and val: none)
            loaded.append(list(key))
        return get_item(self, key)

    def spy_all_reduce(tensor, *args, **kwargs):
        devices.append(str(tensor.device))
        return all_reduce(tensor, *args, **kwargs)

    def slow_score(self, genome):
        t0 = time.time()
        time.sleep(SCORE_SLEEP)
        result = score(self, genome)
        scores.append([t0, time.time()])
        return result

    def on_epoch(e):
        if e.epoch == kill_after and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    YoloDataset.__getitem__, dist.all_reduce, train_module.OneShotScorer.score = spy_get_item, spy_all_reduce, slow_score
    try:
        result = train_supernet(get_space("yolov7-tiny", nc=3), data, out, SupernetConfig(**settings),
                                on_epoch=on_epoch)
        record = dict(loaded=loaded, devices=devices, scores=scores, returned=time.time(),
                      collective_device=str(collective_device()), resumed_from=result.resumed_from,
                      map50_95_largest=result.map50_95_largest)
        Path(records, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_two(data: str, out: Path, records: Path, settings: dict, kill_after: int | None = None) -> None:
    """Two processes of one job; fails the test when any is still running after DEADLINE."""
    records.mkdir(parents=True, exist_ok=True)
    ctx = mp.spawn(_worker, args=(2, _free_port(), data, str(out), settings, str(records), kill_after),
                   nprocs=2, join=False)
    deadline = time.monotonic() + DEADLINE
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"a rank was still running after {DEADLINE:.0f} s (stuck)")


@pytest.fixture(scope="module")
def parallel_run(tiny_data, tmp_path_factory):
    """One 2-process run of SETTINGS: (supernet file, {rank: record})."""
    root = tmp_path_factory.mktemp("ddp")
    _run_two(tiny_data, root / "ddp.pt", root, SETTINGS)
    return root / "ddp.pt", {r: json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)}


def test_two_processes_equal_one_process_on_the_same_global_batch(tiny_data, tmp_path, parallel_run):
    single = tmp_path / "single.pt"
    train_supernet(get_space("yolov7-tiny", nc=3), tiny_data, single, SupernetConfig(**SETTINGS))
    a, b = read_checkpoint(single), read_checkpoint(parallel_run[0])
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


def _epoch_order(data: str, settings: dict) -> list[list[int]]:
    """The (epoch, index) keys of epoch 0 of the training loader, in order."""
    loader = make_loader(scan_split(load_data_config(data), "train"), img=settings["img"], batch=settings["batch"],
                         augment=True, seed=0, shuffle=True)
    return [list(k) for k in loader.sampler]


def test_each_process_loads_only_its_shard_of_every_step(tiny_data, parallel_run):
    _path, records = parallel_run
    order = _epoch_order(tiny_data, SETTINGS)
    assert len(order) == 16
    # steps of 15 and 1 images, each cut in two: rank 0 loads the first piece, rank 1 the second
    # (the last step's first piece is empty)
    steps = [order[i:i + 15] for i in range(0, 16, 15)]
    want0 = [k for s in steps for k in s[:round(len(s) / 2)]]
    want1 = [k for s in steps for k in s[round(len(s) / 2):]]
    assert records[0]["loaded"] == want0 and records[1]["loaded"] == want1
    assert sorted(want0 + want1) == sorted(order) and not set(map(tuple, want0)) & set(map(tuple, want1))


def test_rank_batches_split_every_step_into_disjoint_shares_that_make_the_epoch():
    order = [(0, i) for i in (7, 3, 9, 0, 4, 8, 1, 6, 2)]          # 9 keys: steps of 4, 4, 1
    shares = [list(RankBatches(order, batch=4, pieces=4, rank=r, world=2)) for r in (0, 1)]
    assert shares[0] == [[(0, 7), (0, 9)], [(0, 4), (0, 1)], [(0, 2)]]   # pieces 0 and 2 of each step
    assert shares[1] == [[(0, 3), (0, 0)], [(0, 8), (0, 6)], []]         # 1 of 4 pieces: piece 2's
    assert sorted(k for s in shares for step in s for k in step) == sorted(order)
    batches = RankBatches(order, batch=4, pieces=4, rank=1, world=2)
    assert [batches.step_size(i) for i in range(len(batches))] == [4, 4, 1]
    assert batches.layout(0) == [(1, 0, 1), (3, 1, 2)] and batches.layout(2) == []
    assert RankBatches(order, batch=4, pieces=4, rank=0, world=2).layout(2) == [(2, 0, 1)]
    one = RankBatches(order, batch=4, pieces=2)                      # one process: whole steps
    assert list(one) == [order[:4], order[4:8], order[8:]] and one.layout(2) == [(1, 0, 1)]


def test_rank_0_scores_and_saves_while_the_others_return(parallel_run):
    path, records = parallel_run
    meta = read_checkpoint(path)["meta"]
    assert meta["complete"] and 0.0 <= meta["map50_95_largest"] <= 1.0
    assert len(records[0]["scores"]) == 2 and records[1]["scores"] == []
    assert records[0]["map50_95_largest"] == meta["map50_95_largest"]
    # rank 1 was done before rank 0 finished scoring its first sub-network (it never waited)
    assert records[1]["returned"] < records[0]["scores"][0][1]
    assert records[1]["map50_95_largest"] != records[1]["map50_95_largest"]     # NaN: not scored there


def test_collective_tensors_live_on_the_groups_device(parallel_run):
    assert collective_device() == torch.device("cpu")          # no process group
    for record in parallel_run[1].values():
        assert record["collective_device"] == "cpu"            # gloo
        # per step (2): flags, gradients, loss; per epoch (1): the checkpoint barrier
        assert len(record["devices"]) == 2 * 3 + 1 and set(record["devices"]) == {"cpu"}


def test_each_process_takes_the_gpu_of_its_local_rank():
    cuda = torch.device("cuda")
    assert process_device(cuda, world=2, local_rank=1) == torch.device("cuda", 1)
    assert process_device(torch.device("cuda", 1), world=1, local_rank=0) == torch.device("cuda", 1)
    assert process_device(torch.device("cpu"), world=4, local_rank=3) == torch.device("cpu")
    with pytest.raises(SupernetError, match="each process takes cuda:LOCAL_RANK; use --device cuda"):
        process_device(torch.device("cuda", 0), world=2, local_rank=1)


def test_a_run_whose_rank_was_killed_resumes_from_the_last_checkpoint(tiny_data, tmp_path):
    settings = {**SETTINGS, "epochs": 2, "subset": 6, "batch": 6, "calib_images": 2}
    out = tmp_path / "killed.pt"
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):   # spawn ends the other
        _run_two(tiny_data, out, tmp_path / "first", settings, kill_after=1)   # rank 1: kill -9 after epoch 1
    meta = read_checkpoint(out)["meta"]
    assert meta["epochs_done"] == 1 and not meta["complete"]
    _run_two(tiny_data, out, tmp_path / "second", settings)
    record = json.loads((tmp_path / "second" / "rank0.json").read_text())
    meta = read_checkpoint(out)["meta"]
    assert record["resumed_from"] == 1 and meta["epochs_done"] == 2 and meta["complete"]
    assert len(record["loaded"]) == 3           # only epoch 2 trained again, half of its 6 images


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_use_nccl_with_collectives_on_each_processes_gpu(tiny_data, tmp_path):
    _run_two(tiny_data, tmp_path / "nccl.pt", tmp_path, {**SETTINGS, "device": "cuda"})
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert record["collective_device"] == f"cuda:{rank}" and set(record["devices"]) == {f"cuda:{rank}"}
    assert read_checkpoint(tmp_path / "nccl.pt")["meta"]["complete"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_and_scoring_use_the_same_code(tiny_data, tmp_path):
    out = tmp_path / "cuda.pt"
    result = train_supernet(get_space("yolov7-tiny", nc=3), tiny_data, out,
                            SupernetConfig(**{**SETTINGS, "shards": 1, "device": "cuda"}))
    assert read_checkpoint(out)["meta"]["complete"] and result.map50_95_largest >= 0
