"""Supernet training: the file format, resuming (in process and after kill -9), refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.supernet import (SupernetConfig, SupernetError, load_supernet, read_checkpoint,
                          train_supernet)
from search_spaces import get_space

TINY = dict(img=64, batch=8, random_subnets=1, calib_images=8, activation="relu")


class _Stop(Exception):
    pass


def test_file_is_a_plain_state_dict_with_metadata(tiny_data, tmp_path):
    space = get_space("yolov7-tiny", nc=3)
    path = tmp_path / "sn.pt"
    result = train_supernet(space, tiny_data, path, SupernetConfig(epochs=1, **TINY))
    assert result.epochs == 1 and result.resumed_from == 0
    assert 0.0 <= result.map50_95_smallest <= 1.0 and 0.0 <= result.map50_95_largest <= 1.0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"meta", "state_dict"}       # the training state is dropped when done
    meta = ckpt["meta"]
    assert (meta["space"], meta["signature"], meta["nc"], meta["img"], meta["activation"], meta["epochs"]) == \
        ("yolov7-tiny", space.signature(), 3, 64, "relu", 1)
    assert meta["complete"] and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    net = load_supernet(path, space)
    assert net.meta["img"] == 64
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(net.state_dict()[key], value)
    with pytest.raises(SupernetError, match="signature"):
        load_supernet(path, _renamed(space))


def _renamed(space):
    """The same space with another dimension set (its signature differs)."""
    class Narrower(type(space)):
        ranges = type(space).ranges.__class__(**{**type(space).ranges.__dict__, "depth": (1, 2, 1)})
    return Narrower(nc=space.nc)


def test_resume_continues_exactly_where_it_stopped(tiny_data, tmp_path):
    space = get_space("yolov7-tiny", nc=3)
    config = SupernetConfig(epochs=2, **TINY)
    straight = tmp_path / "straight.pt"
    train_supernet(space, tiny_data, straight, config)

    resumed = tmp_path / "resumed.pt"

    def stop_after_first(stats):
        if stats.epoch == 1:
            raise _Stop
    with pytest.raises(_Stop):
        train_supernet(space, tiny_data, resumed, config, on_epoch=stop_after_first)
    partial = read_checkpoint(resumed)
    assert partial["meta"]["epochs_done"] == 1 and not partial["meta"]["complete"]
    assert "train_state" in partial
    with pytest.raises(SupernetError, match="stopped after epoch 1"):
        load_supernet(resumed, space)
    result = train_supernet(space, tiny_data, resumed, config)
    assert result.resumed_from == 1
    a, b = read_checkpoint(straight)["state_dict"], read_checkpoint(resumed)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def test_other_settings_are_refused_before_training(tiny_data, tmp_path):
    space = get_space("yolov7-tiny", nc=3)
    path = tmp_path / "sn.pt"
    train_supernet(space, tiny_data, path, SupernetConfig(epochs=1, **TINY))
    before = path.read_bytes()
    with pytest.raises(SupernetError, match="batch=8.*not 4"):
        train_supernet(space, tiny_data, path, SupernetConfig(epochs=1, **{**TINY, "batch": 4}))
    with pytest.raises(SupernetError, match="activation"):
        train_supernet(space, tiny_data, path, SupernetConfig(epochs=1, **{**TINY, "activation": "silu"}))
    assert path.read_bytes() == before
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SupernetError, match="not a y7nas supernet file"):
        read_checkpoint(bad)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import cli; cli.app()", *args]


def test_cli_resumes_after_kill_9(tiny_data, tmp_path):
    path = tmp_path / "sn.pt"
    args = ["supernet", "train", "--space", "yolov7-tiny", "--data", tiny_data, "-o", str(path),
            "--epochs", "3", "--img", "64", "--batch", "8", "--random-subnets", "0",
            "--calib-images", "8", "--activation", "relu", "--threads", "1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and read_checkpoint(path)["meta"]["epochs_done"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_checkpoint(path)["meta"]["epochs_done"]
    assert 1 <= done < 3
    rerun = subprocess.run(_cli(*args), capture_output=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    summary = json.loads(rerun.stdout.decode().strip().splitlines()[-1])
    assert summary["resumed_from"] == done and summary["epochs"] == 3
    meta = read_checkpoint(path)["meta"]
    assert meta["complete"] and meta["epochs_done"] == 3
    # a changed setting is one line, exit 1, the file untouched
    before = path.read_bytes()
    i = args.index("--batch")
    bad = subprocess.run(_cli(*args[:i + 1], "4", *args[i + 2:]), capture_output=True, env=env)
    assert bad.returncode == 1
    last = bad.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("error:") and "batch=8" in last
    assert "Traceback" not in bad.stderr.decode()
    assert path.read_bytes() == before


def test_random_subnets_are_drawn_from_the_pool_and_the_file_records_it(tiny_data, tmp_path, monkeypatch):
    """Budget-aware sandwich: the largest and the smallest as always, the random ones from the pool."""
    import random

    from nas.supernet import Supernet, pool_identity, sample_genome

    space = get_space("yolov7-tiny", nc=3)
    rng = random.Random(5)
    pool = [sample_genome(space, "relu", rng, "random") for _ in range(2)]
    seen = []
    activate = Supernet.activate
    monkeypatch.setattr(Supernet, "activate", lambda self, g: (seen.append(g.genome_hash()), activate(self, g))[1])
    config = SupernetConfig(epochs=1, **TINY)
    path = tmp_path / "pool.pt"
    train_supernet(space, tiny_data, path, config, random_pool=pool)
    steps = 16 // TINY["batch"]
    training = seen[1:1 + 3 * steps]                   # after the initial activation: 3 per step
    largest = sample_genome(space, "relu", random.Random(0), "largest")
    assert len(training) == 3 * steps
    assert set(training[2::3]) <= {g.genome_hash() for g in pool}          # every random one
    assert largest.genome_hash() not in {g.genome_hash() for g in pool}
    meta = read_checkpoint(path)["meta"]
    assert meta["random_pool"] == pool_identity(pool) and meta["random_pool"]["size"] == 2
    with pytest.raises(SupernetError, match="random sub-networks from a pool of 2 .*, not from the whole space"):
        train_supernet(space, tiny_data, path, config)           # the same file without its pool
    with pytest.raises(SupernetError, match="uses silu, the supernet relu"):
        train_supernet(space, tiny_data, tmp_path / "x.pt", config,
                       random_pool=[sample_genome(space, "silu", rng, "random")])
    assert not (tmp_path / "x.pt").exists()
