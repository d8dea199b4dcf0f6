"""Latency tables: built by timing every distinct layer once, read back, predicting whole-model
ONNX Runtime latency; missing layers added to a writable table and refused by a frozen one;
malformed or foreign files refused in one line; `y7nas latency-table build`; a table built for 80
classes predicting a 3-class model from its heads timed at 1, 20 and 80 classes."""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import stat

import pytest
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.expand import expand
from nas.fuse import fuse
from nas.latency import get_backend
from nas.latency._layers import HEAD_CLASS_COUNTS, head_time, layer_module, layer_uses
from nas.latency._table import TABLE_FORMAT, TableError, build_table, load_table, measure_quietest
from search_spaces import get_space

IMG = 64
SPACE = "yolov7-tiny-cpu"
runner = CliRunner()


def deploy(genome):
    return fuse(build_model(parse_cfg(expand(genome), source="test")).eval(), inplace=True)


def genomes(count: int, seed: int, nc: int = 80):
    space, rng = get_space(SPACE, nc=nc), random.Random(seed)
    return [space.decode(space.sample_params(rng)) for _ in range(count)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "table.json"
    stages = []
    result = build_table(get_space(SPACE), IMG, path, samples=2, calibration_models=4, holdout=2, runs=10,
                         warmup=2, calibration_runs=20,
                         progress=lambda stage, done, total, layers: stages.append((stage, done, total)))
    return result, stages


def test_build_times_every_distinct_layer_of_the_sampled_architectures(built):
    result, stages = built
    table = load_table(result.path)
    # the preset + 2 samples, then preset + 2 extremes + 4 calibration models (+ their timing), 2 holdouts
    assert ("sampling", 3, 3) in stages and ("calibrating", 8, 8) in stages and ("coverage", 2, 2) in stages
    assert len(table.layers) == result.layers > 100
    assert all(ms > 0 for ms in table.layers.values())
    sampled = deploy(get_space(SPACE).decode(get_space(SPACE).sample_params(random.Random(0))))
    assert not table.missing(sampled, IMG)  # the first sampled architecture is fully covered
    meta = table.meta
    assert meta["backend"] == "onnxruntime" and meta["device"] == "cpu" and meta["threads"] == 1
    assert set(meta["versions"]) == {"torch", "onnx", "onnxruntime"}
    assert meta["img"] == IMG and meta["space"] == SPACE and meta["nc"] == 80 and meta["batch"] == 1
    assert meta["head_class_counts"] == list(HEAD_CLASS_COUNTS) == [1, 20, 80]
    head = layer_uses(sampled, IMG)[-1]
    assert all(head.with_classes(nc).key in table.layers for nc in HEAD_CLASS_COUNTS)
    cal = table.calibration
    assert cal["curve"] in ("linear", "power") and cal["a"] > 0 and len(cal["points"]) == 7
    assert 0 <= result.coverage["holdout_layer_hit_rate"] <= 1
    assert table.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    doc = json.loads(result.path.read_text())
    assert doc["format"] == TABLE_FORMAT and doc["version"] == 1


def test_layer_keys_name_module_arguments_and_input_shapes():
    model = deploy(genomes(1, 0)[0])
    uses = layer_uses(model, IMG)
    assert uses[0].key.startswith("Conv(3, ") and uses[0].key.endswith("<- 1x3x64x64")
    concat = next(u for u in uses if u.key.startswith("Concat"))
    assert concat.multi_input and len(concat.inputs) == concat.key.count(" + ") + 1
    assert uses[-1].key.startswith("IDetect(80, ")


def test_prediction_is_close_to_measured_onnxruntime_latency(built):
    """3 new architectures at 64 px: median error within 50 %, none off by more than 2x, and the
    smallest and largest ordered as measured. Loose on purpose: these are sub-millisecond models
    timed on a CPU other jobs share, and a table built in seconds from 7 whole models (repeated
    builds here predicted the same model up to 1.5x apart); the error of a real table on a quiet
    machine is benchmarks/latency_predictor.py's (160 px: 3-5 %)."""
    result, _ = built
    table = load_table(result.path)
    backend = get_backend("onnxruntime")
    models = [deploy(genome) for genome in genomes(3, 7)]
    predicted = [table.predict(model, IMG) for model in models]
    measured = [math.inf] * len(models)
    for _ in range(2):  # other jobs only ever slow a measurement down: a second try keeps the quieter
        measured = [min(m, measure_quietest(backend, model, IMG, 30, 5, 1, "cpu", 3))
                    for m, model in zip(measured, models)]
        errors = sorted(abs(p - m) / m for p, m in zip(predicted, measured))
        if errors[1] <= 0.5 and errors[-1] <= 1.0:
            break
    pairs = list(zip(predicted, measured))
    assert errors[1] <= 0.5 and errors[-1] <= 1.0, pairs
    pairs.sort()
    if pairs[-1][0] > 2 * pairs[0][0]:
        assert pairs[-1][1] > pairs[0][1], pairs


def copy_without(source, path, keys):
    """A copy of the table file ``source`` at ``path`` lacking the layers ``keys``."""
    doc = json.loads(source.read_text())
    for key in keys:
        del doc["layers"][key], doc["timed_on"][key]
    path.write_text(json.dumps(doc))
    return path


def test_a_writable_table_times_and_adds_missing_layers(built, tmp_path):
    result, _ = built
    model = deploy(genomes(1, 0)[0])  # the first sampled architecture, without two of its layers
    dropped = [use.key for use in layer_uses(model, IMG)[:2]]
    path = copy_without(result.path, tmp_path / "copy.json", dropped)
    table = load_table(path)
    missing = table.missing(model, IMG)
    assert [u.key for u in missing] == dropped
    before = table.sha256
    predicted = table.predict(model, IMG)
    assert predicted > 0 and table.added == len(missing)
    again = load_table(path)
    assert not again.missing(model, IMG) and again.predict(model, IMG) == pytest.approx(predicted)
    assert again.sha256 == table.sha256 != before
    assert again.identity == table.identity == load_table(result.path).identity
    assert len(again.layers) == len(load_table(result.path).layers)


def test_a_read_only_table_names_the_missing_layer(built, tmp_path):
    result, _ = built
    model = deploy(genomes(1, 0)[0])
    path = copy_without(result.path, tmp_path / "frozen.json", [layer_uses(model, IMG)[3].key])
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    content = path.read_bytes()
    with pytest.raises(TableError) as excinfo:
        load_table(path).predict(model, IMG)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "not writable" in message
    first = load_table(path).missing(model, IMG)[0]
    assert f"layer {first.index} {first.key}" in message
    assert path.read_bytes() == content


# -- any class count ------------------------------------------------------------------------
def same_architecture(nc: int, seed: int = 0):
    """The first architecture the build sampled, deploy form, with an ``nc``-class head."""
    return deploy(genomes(1, seed, nc=nc)[0])


def frozen_copy(source, path):
    shutil.copy(source, path)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def test_head_time_interpolates_between_class_counts_and_continues_the_last_segment():
    times = {1: 0.10, 20: 0.20, 80: 0.50}
    assert head_time(1, times) == pytest.approx(0.10) and head_time(80, times) == pytest.approx(0.50)
    assert head_time(3, times) == pytest.approx(0.10 + 0.10 * 2 / 19)
    assert head_time(50, times) == pytest.approx(0.35)
    assert head_time(200, times) == pytest.approx(0.50 + 0.30 * 120 / 60)
    # noise that made 1 class slower than 20 is capped at the 20-class time
    assert head_time(3, {1: 0.30, 20: 0.20, 80: 0.50}) == pytest.approx(0.20)


def test_a_table_built_for_80_classes_predicts_a_3_class_model_read_only(built, tmp_path):
    path = frozen_copy(built[0].path, tmp_path / "frozen.json")
    content = path.read_bytes()
    table = load_table(path)
    three, eighty = same_architecture(3), same_architecture(80)
    head = layer_uses(three, IMG)[-1]
    assert head.key.startswith("IDetect(3, ") and head.key not in table.layers  # never timed at 3 classes
    assert not table.missing(three, IMG)
    predicted = table.predict(three, IMG)
    assert table.added == 0 and path.read_bytes() == content
    references = {nc: table.layers[head.with_classes(nc).key] for nc in HEAD_CLASS_COUNTS}
    assert table.layer_ms(head) == pytest.approx(head_time(3, references))
    # the two models differ in their head only: so do their layer sums
    head_80 = layer_uses(eighty, IMG)[-1]
    assert table.layer_sum(eighty, IMG) - table.layer_sum(three, IMG) == pytest.approx(
        table.layer_ms(head_80) - table.layer_ms(head))
    assert 0 < predicted <= table.predict(eighty, IMG)


def test_the_3_class_head_and_model_predictions_are_close_to_measured(built):
    """The 3-class head as interpolated vs the 3-class head timed alone (within 25 %), and the
    whole 3-class model predicted vs measured (within 50 %, as the 80-class models above: tiny
    models on a shared CPU); the quieter of two tries of each."""
    table = load_table(built[0].path)
    model = same_architecture(3)
    head = layer_uses(model, IMG)[-1]
    interpolated, predicted = table.layer_ms(head), table.predict(model, IMG)
    backend = get_backend("onnxruntime")
    timed = measured = math.inf
    for _ in range(2):
        timed = min(timed, table.time(layer_module(model, head), head))
        measured = min(measured, measure_quietest(backend, model, IMG, 30, 5, 1, "cpu", 3))
        if abs(interpolated - timed) <= 0.25 * timed and abs(predicted - measured) <= 0.5 * measured:
            break
    assert abs(interpolated - timed) <= 0.25 * timed, (interpolated, timed)
    assert abs(predicted - measured) <= 0.5 * measured, (predicted, measured)


def older_table(source, path, edit=None):
    """``source`` as a table written before heads were timed at several class counts: its heads at
    80 classes only, no meta.head_class_counts."""
    doc = json.loads(source.read_text())
    del doc["meta"]["head_class_counts"]
    for key in [k for k in doc["layers"] if k.startswith(("IDetect(1, ", "IDetect(20, "))]:
        del doc["layers"][key], doc["timed_on"][key]
    if edit is not None:
        edit(doc)
    path.write_text(json.dumps(doc))
    return path


def test_an_older_table_times_heads_at_the_reference_counts_or_says_rebuild(built, tmp_path):
    model = same_architecture(3)
    head = layer_uses(model, IMG)[-1]
    writable = load_table(older_table(built[0].path, tmp_path / "older.json"))
    assert [u.key for u in writable.missing(model, IMG)] == [head.with_classes(1).key, head.with_classes(20).key]
    writable.predict(model, IMG)
    assert writable.added == 2 and head.key not in load_table(writable.path).layers

    path = frozen_copy(older_table(built[0].path, tmp_path / "source.json"), tmp_path / "frozen-older.json")
    with pytest.raises(TableError) as excinfo:
        load_table(path).predict(model, IMG)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and f"layer {head.index} IDetect(1, " in message
    assert "interpolated to the model's 3" in message and "older y7nas" in message and "rebuild it" in message


def test_a_head_timed_at_its_own_class_count_uses_that_time(built, tmp_path):
    """An older table built with --nc 3 has the 3-class head itself: a measurement, used as is."""
    model = same_architecture(3)
    head = layer_uses(model, IMG)[-1]
    path = older_table(built[0].path, tmp_path / "nc3.json", lambda doc: doc["layers"].update({head.key: 1.25}))
    table = load_table(frozen_copy(path, tmp_path / "nc3-frozen.json"))
    assert not table.missing(model, IMG) and table.layer_ms(head) == 1.25


def test_a_training_form_model_is_refused(built):
    model = build_model(parse_cfg(expand(genomes(1, 0)[0]), source="test"))
    with pytest.raises(TableError, match="deploy-form"):
        load_table(built[0].path).predict(model, IMG)


@pytest.mark.parametrize("content, expected", [
    (b"{not json", "invalid JSON at line 1"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"format": "something-else"}', "not a y7nas latency table"),
    (b'[1, 2]', "not a y7nas latency table"),
    (json.dumps({"format": TABLE_FORMAT, "version": 99}).encode(), "version 99 is not supported"),
])
def test_malformed_or_foreign_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(TableError) as excinfo:
        load_table(path)
    assert expected in str(excinfo.value) and str(path) in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["meta"].pop("threads"), "meta.threads must be a int"),
    (lambda d: d["meta"].update(backend="tensorrt"), "meta.backend 'tensorrt' is not a latency backend"),
    (lambda d: d["layers"].update({"Conv(1) <- 1x1x1x1": "fast"}), "must be a non-negative number"),
    (lambda d: d["calibration"].update(a=-1), "calibration.a must be positive"),
    (lambda d: d["calibration"].update(curve="spline"), "calibration.curve must be one of"),
    (lambda d: d.update(layers=[]), "layers must be an object"),
    (lambda d: d["meta"].update(head_class_counts=[80]), "meta.head_class_counts must be a list of two or more"),
    (lambda d: d["meta"].update(head_class_counts=[0, 80]), "meta.head_class_counts must be a list of two or more"),
])
def test_malformed_fields_are_named(built, tmp_path, edit, expected):
    doc = json.loads(built[0].path.read_text())
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TableError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_table(path)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(NasError, match="no such latency table"):
        load_table(tmp_path / "absent.json")


def test_cli_build_prints_json_and_extends_an_existing_table(tmp_path):
    path = tmp_path / "cli.json"
    args = ["latency-table", "build", "--space", SPACE, "--img", str(IMG), "-o", str(path), "--samples", "1",
            "--calibration", "2", "--holdout", "0", "--runs", "3", "--warmup", "0", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["table"] == str(path) and summary["layers"] == len(load_table(path).layers)
    assert summary["seconds"] > 0 and summary["calibration"]["a"] > 0
    second = runner.invoke(app, args[:-1] + ["--seed", "5", "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout.strip().splitlines()[-1])["layers"] >= summary["layers"]


@pytest.mark.parametrize("args, expected", [
    (["--space", "nope", "--img", "64"], "unknown search space 'nope'"),
    (["--space", SPACE, "--img", "100"], "--img must be a multiple of 32"),
    (["--space", SPACE, "--img", "64", "--backend", "tvm"], "unknown latency backend 'tvm'"),
    (["--space", SPACE, "--img", "64", "--threads", "0"], "--threads must be an integer ≥ 1"),
])
def test_cli_build_bad_input_is_one_error_line(tmp_path, args, expected):
    result = runner.invoke(app, ["latency-table", "build", "-o", str(tmp_path / "t.json"), *args])
    assert result.exit_code == 1
    assert result.output.count("error:") == 1 and expected in result.output
    assert "Traceback" not in result.output and not (tmp_path / "t.json").exists()


def test_cli_build_refuses_to_overwrite_a_foreign_file(tmp_path):
    path = tmp_path / "notes.json"
    path.write_text('{"mine": true}')
    result = runner.invoke(app, ["latency-table", "build", "--space", SPACE, "--img", "64", "-o", str(path)])
    assert result.exit_code == 1 and "not a y7nas latency table" in result.output
    assert path.read_text() == '{"mine": true}'


# -- through the commands that take --latency-table -----------------------------------------
def csv_rows(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_search_predicts_latency_from_the_table_and_records_its_hash(built, tmp_path):
    import optuna

    from nas.genome import Genome

    table_path = tmp_path / "search-table.json"
    shutil.copy(built[0].path, table_path)
    identity_before, sha_before = load_table(table_path).identity, load_table(table_path).sha256
    results = tmp_path / "results"
    command = [str(a) for a in (
        "search", "--space", SPACE, "--trials", 3, "--study", "tab", "--objectives", "gflops,latency_ms",
        "--fidelity", "flops", "--img", IMG, "--threads", 1, "--results-dir", results,
        "--latency-table", table_path)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    study_dir = results / "tab"
    url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    stored = optuna.load_study(study_name="tab", storage=url).user_attrs["y7nas:config"]
    assert stored["latency"]["table_id"] == identity_before
    assert stored["latency"]["backend"] == "onnxruntime" and stored["latency"]["threads"] == 1
    table = load_table(table_path)  # with the layers the search timed and added
    front = csv_rows(study_dir / "pareto.csv")
    assert front
    for row in front:
        genome = Genome.from_yaml((study_dir / "models" / f"trial_{row['number']}.genome.yaml").read_text())
        assert float(row["latency_ms"]) == pytest.approx(table.predict(deploy(genome), IMG), abs=1e-3)
    # the table grew (its file hash changed) but means the same: the same search resumes
    assert table.sha256 != sha_before and table.identity == identity_before
    again = runner.invoke(app, command[:command.index("--trials") + 1] + ["4"] + command[command.index("--trials") + 2:])
    assert again.exit_code == 0, again.output


def test_profile_predicts_with_the_table_and_a_frozen_table_names_a_missing_layer(built, tmp_path):
    table_path = tmp_path / "profile-table.json"
    shutil.copy(built[0].path, table_path)
    result = runner.invoke(app, ["profile", "yolov7-tiny", "--img", str(IMG), "--deploy", "--latency",
                                 "--latency-table", str(table_path), "--json"])
    assert result.exit_code == 0, result.output
    lat = json.loads(result.stdout)["latency_ms"]
    preset = get_space(SPACE).base
    assert lat["median"] == pytest.approx(load_table(table_path).predict(deploy(preset), IMG))
    assert lat["table_sha"] == load_table(table_path).sha256

    table_path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    result = runner.invoke(app, ["profile", "yolov7", "--img", str(IMG), "--deploy", "--latency",
                                 "--latency-table", str(table_path)])
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "has no time for layer 0 Conv(3, 32, 3, 1" in result.output and "not writable" in result.output
    assert "Traceback" not in result.output
