"""Latency tables do not mix machines or sizes: each timed layer records the machine (fingerprint)
that timed it; missing layers are refused, in one line, on another host / CPU / library version,
at another image size, or into an older table that records no machine; sibling processes time
missing layers one at a time under a file lock and keep each other's additions.

The other machine is faked by editing the table file's recorded fingerprint (its meta)."""
from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.expand import expand
from nas.fuse import fuse
from nas.latency._layers import layer_uses
from nas.latency._table import (FINGERPRINT_FIELDS, TableError, build_table, fingerprint_key, load_table,
                                machine_fingerprint)
from search_spaces import get_space

IMG = 64
SPACE = "yolov7-tiny-cpu"
ROOT = Path(__file__).resolve().parents[2]


def deploy(genome):
    return fuse(build_model(parse_cfg(expand(genome), source="test")).eval(), inplace=True)


def sampled(seed: int = 0):
    """The first architecture the table's build sampled (seed 0) or calibrated on (seed 1): every
    layer is in the table."""
    space = get_space(SPACE)
    return deploy(space.decode(space.sample_params(random.Random(seed))))


def own_layer(seed: int = 0, other: int = 1) -> str:
    """The key of the first layer of architecture ``seed`` that architecture ``other`` lacks."""
    theirs = {use.key for use in layer_uses(sampled(other), IMG)}
    return next(use.key for use in layer_uses(sampled(seed), IMG) if use.key not in theirs)


def without(key: str, edit=None):
    """An edit of a table file's JSON that drops layer ``key`` (then applies ``edit``): ``sampled()``
    then lacks exactly that layer."""
    def drop(doc):
        del doc["layers"][key]
        doc.get("timed_on", {}).pop(key, None)
        if edit is not None:
            edit(doc)
    return drop


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("hosts") / "table.json"
    build_table(get_space(SPACE), IMG, path, samples=1, calibration_models=2, holdout=0, runs=3, warmup=0,
                calibration_runs=3)
    return path


def copy_of(built: Path, tmp_path: Path, edit=None, name: str = "copy.json") -> Path:
    path = tmp_path / name
    if edit is None:
        shutil.copy(built, path)
    else:
        doc = json.loads(built.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    return path


def one_line_error(path: Path, model, img: int = IMG) -> str:
    before = path.read_bytes()
    with pytest.raises(TableError) as excinfo:
        load_table(path).predict(model, img)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    assert path.read_bytes() == before  # nothing timed into it
    return message


def test_a_table_records_the_machine_that_timed_each_layer(built):
    table = load_table(built)
    meta = table.meta
    here = machine_fingerprint(meta["device"], meta["backend"], meta["threads"])
    assert table.fingerprint == here and set(here) == set(FINGERPRINT_FIELDS)
    assert here["host"] and here["device_name"] and set(here["versions"]) == {"torch", "onnx", "onnxruntime"}
    assert table.hosts == {fingerprint_key(here): here}
    assert set(table.timed_on) == set(table.layers)
    assert all(table.layer_host(key) == here for key in table.layers)
    doc = json.loads(built.read_text())
    assert doc["hosts"] == table.hosts and doc["timed_on"] == table.timed_on


def test_layers_added_later_record_the_machine_and_the_lock_file_is_beside_the_table(built, tmp_path):
    path = copy_of(built, tmp_path, without(own_layer()))
    table = load_table(path)
    model = sampled()
    missing = table.missing(model, IMG)
    assert [u.key for u in missing] == [own_layer()]
    table.predict(model, IMG)
    again = load_table(path)
    assert table.added == 1 and not again.missing(model, IMG)
    assert again.layer_host(missing[0].key) == again.fingerprint
    assert (tmp_path / "copy.json.lock").is_file()


@pytest.mark.parametrize("field, value, shown", [
    ("host", "deploy-box", "'deploy-box'"),
    ("device_name", "Ampere Altra Q80-30", "Ampere Altra Q80-30"),
    ("versions", {"torch": "2.1.0", "onnx": "1.15.0", "onnxruntime": "1.16.3"}, "onnxruntime 1.16.3"),
])
def test_missing_layers_are_refused_on_another_machine(built, tmp_path, field, value, shown):
    path = copy_of(built, tmp_path, without(own_layer(), lambda doc: doc["meta"].update({field: value})))
    assert not load_table(path).missing(sampled(1), IMG)  # what it has still predicts
    load_table(path).predict(sampled(1), IMG)
    message = one_line_error(path, sampled())
    here = machine_fingerprint("cpu", "onnxruntime", 1)
    assert "it was measured on " in message and shown in message and f"this machine is {here['host']!r}" in message
    assert f"(differs in {field})" in message and "y7nas latency-table build" in message
    assert "cannot time 1 layer it lacks (first: layer" in message


def test_an_older_table_that_records_no_machine_takes_no_new_layers(built, tmp_path):
    def older(doc):
        for name in ("hosts", "timed_on"):
            doc.pop(name)
        doc["meta"].pop("host")

    path = copy_of(built, tmp_path, without(own_layer(), older))
    table = load_table(path)
    assert table.fingerprint is None and table.layer_host(next(iter(table.layers))) is None
    assert table.predict(sampled(1), IMG) > 0  # complete models still predict
    message = one_line_error(path, sampled())
    assert "records no machine it was measured on" in message and "rebuild it on its device" in message


def test_an_older_table_of_this_machine_still_grows_and_records_the_new_layers(built, tmp_path):
    def older(doc):
        for name in ("hosts", "timed_on"):
            doc.pop(name)

    path = copy_of(built, tmp_path, without(own_layer(), older))
    old_keys = set(load_table(path).layers)
    model = sampled()
    load_table(path).predict(model, IMG)
    table = load_table(path)
    new = set(table.layers) - old_keys
    assert len(new) == 1 and set(table.timed_on) == new
    assert table.layer_host(new.pop()) == table.fingerprint
    assert all(table.layer_host(key) is None for key in old_keys)  # unknown, as they were


def test_another_image_size_is_refused_naming_both_sizes(built, tmp_path):
    path = copy_of(built, tmp_path)
    message = one_line_error(path, sampled(), IMG + 32)
    assert f"built at {IMG} px, asked for {IMG + 32} px" in message and f"--img {IMG + 32}" in message
    # a frozen copy names the size too, not just the first missing layer
    path.chmod(0o444)
    assert f"built at {IMG} px, asked for {IMG + 32} px" in one_line_error(path, sampled(), IMG + 32)


def test_build_does_not_extend_a_table_of_another_machine_or_size(built, tmp_path):
    path = copy_of(built, tmp_path, lambda doc: doc["meta"].update(host="deploy-box"))
    before = path.read_bytes()
    with pytest.raises(TableError, match="exists and was measured on 'deploy-box'.*differs in host"):
        build_table(get_space(SPACE), IMG, path, samples=1, calibration_models=2, holdout=0, runs=3, warmup=0)
    path = copy_of(built, tmp_path, name="other-size.json")
    with pytest.raises(TableError, match=f"exists and was built at {IMG} px, not {IMG + 32} px"):
        build_table(get_space(SPACE), IMG + 32, path, samples=1, calibration_models=2, holdout=0, runs=3,
                    warmup=0)
    assert path.read_bytes() == built.read_bytes() and (tmp_path / "copy.json").read_bytes() == before


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(hosts=[]), "hosts must be an object"),
    (lambda d: d.update(timed_on={"Conv(1) <- 1x1x1x1": next(iter(d["hosts"]))}), "names a layer the table has"),
    (lambda d: d["timed_on"].update({next(iter(d["layers"])): "feedc0ffee00"}), "must be a key of hosts"),
])
def test_malformed_machine_records_are_named(built, tmp_path, edit, expected):
    path = copy_of(built, tmp_path, edit)
    with pytest.raises(TableError, match=expected):
        load_table(path)


# -- one at a time: the lock ----------------------------------------------------------------
def test_missing_layers_wait_for_the_lock_and_keep_what_a_sibling_added_meanwhile(built, tmp_path):
    path = copy_of(built, tmp_path, without(own_layer()))
    table = load_table(path)
    model = sampled()
    lacking = table.missing(model, IMG)[0].key
    errors: list[BaseException] = []

    def predict():
        try:
            table.predict(model, IMG)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    fd = os.open(tmp_path / "copy.json.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sibling worker timing layers
        worker = threading.Thread(target=predict)
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive() and table.added == 0  # waits: times nothing while the lock is held
        # the sibling adds the very layer this one lacks, then lets go
        doc = json.loads(path.read_text())
        doc["layers"][lacking] = 0.5
        doc["timed_on"][lacking] = next(iter(doc["hosts"]))
        path.write_text(json.dumps(doc))
    finally:
        os.close(fd)
    worker.join(120)
    assert not worker.is_alive() and not errors, errors
    assert table.added == 0 and table.layers[lacking] == 0.5  # taken from the file, not timed again
    assert load_table(path).layers[lacking] == 0.5


CHILD = textwrap.dedent("""
    import random, sys
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.fuse import fuse
    from nas.latency._table import load_table
    from search_spaces import get_space

    space = get_space({space!r})
    model = fuse(build_model(parse_cfg(expand(space.decode(space.sample_params(random.Random(int(sys.argv[2]))))),
                                       source="child")).eval(), inplace=True)
    table = load_table(sys.argv[1])
    table.predict(model, {img})
    print(table.added)
""")


def test_two_processes_adding_layers_to_one_table_keep_both(built, tmp_path):
    path = copy_of(built, tmp_path, without(own_layer(0, 1), without(own_layer(1, 0))))
    code = CHILD.format(space=SPACE, img=IMG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", code, str(path), str(seed)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        assert out.strip() == "1"
    table = load_table(path)
    assert not table.missing(sampled(0), IMG) and not table.missing(sampled(1), IMG)
    added = [own_layer(0, 1), own_layer(1, 0)]
    assert all(key in table.layers and table.layer_host(key) == table.fingerprint for key in added)
