"""Search spaces: every sampled genome is valid, builds, and round-trips through the flat YAML."""
from __future__ import annotations

import random

import optuna
import pytest
import torch
import yaml

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import SearchError
from nas.expand import dump_yaml, expand
from nas.genome import SILU_ONLY_SPP, Genome
from nas.presets import PRESETS
from search_spaces import SPACES, get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _sample(space, n, seed):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, space.suggest(trial)))
        study.tell(trial, 0.0)
    return study, out


@pytest.mark.parametrize("name,n,forward", [("yolov7-tiny", 6, True), ("yolov7", 2, False)])
def test_sampled_genomes_build_and_round_trip(name, n, forward):
    space = get_space(name, nc=5)
    _, samples = _sample(space, n, seed=1)
    for trial, genome in samples:
        assert genome.nc == 5
        # genome YAML round trip (same value, same hash)
        again = Genome.from_yaml(genome.to_yaml())
        assert again == genome and again.genome_hash() == genome.genome_hash()
        # flat yolov7 YAML round trip: text → safe_load → parse_cfg (same rows) → build
        text = dump_yaml(expand(genome))
        assert yaml.safe_load(text) == expand(genome)
        cfg = parse_cfg(yaml.safe_load(text), source="reloaded")
        assert cfg.rows == parse_cfg(expand(genome), source="direct").rows
        reloaded = build_model(cfg)
        assert _n_params(reloaded) > 0
        # the trial's parameters decode to the same genome
        assert space.decode(trial.params) == genome
        if forward:
            reloaded.eval()
            with torch.no_grad():
                out = reloaded(torch.zeros(1, 3, 64, 64))
            assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("name", list(SPACES))
def test_conditional_dimensions_never_give_invalid_genomes(name):
    space = get_space(name)
    dims = {d.name: d for d in space.dimensions()}
    rng = random.Random(0)
    seen_patterns, seen_spp = set(), set()
    for _ in range(300):
        params = space.sample_params(rng)
        assert set(params) == set(space.active(params)) <= set(dims)
        genome = space.decode(params)  # the Genome validates itself
        for elan in [s.elan for s in genome.stages] + [t.elan for t in genome.head.top_down] + \
                [b.elan for b in genome.head.bottom_up]:
            assert elan.pattern == "all" or elan.depth % 2 == 0
            seen_patterns.add((elan.depth % 2, elan.pattern))
        assert genome.activation == "silu" or genome.spp.kind not in SILU_ONLY_SPP
        seen_spp.add((genome.activation == "silu", genome.spp.kind))
        if genome.activation == "silu":
            assert "spp" in params and "spp_plain" not in params
        else:
            assert "spp_plain" in params and "spp" not in params
    assert (0, "every2") in seen_patterns and (0, "all") in seen_patterns
    assert {(True, k) for k in ("sppcspc", "sppf", "spp", "spp3", "sp")} <= seen_spp


@pytest.mark.parametrize("name", list(SPACES))
def test_parameter_distributions_are_stable_across_trials(name):
    space = get_space(name)
    study, _ = _sample(space, 40, seed=3)
    dists = {}
    for t in study.trials:
        for key, dist in t.distributions.items():
            assert dists.setdefault(key, dist) == dist
    assert set(dists) == {d.name for d in space.dimensions()}


def test_spaces_contain_their_presets_exactly():
    tiny = get_space("yolov7-tiny")
    params = {"width": 1.0, "activation": "leakyrelu", "spp_plain": "sp", "outputs": "conv"}
    for level in ("p2", "p3", "p4", "p5", "td_p4", "td_p3", "bu_p4", "bu_p5"):
        params.update({f"{level}.depth": 2, f"{level}.pattern": "all", f"{level}.hidden": 1.0,
                       f"{level}.out": 1.0})
    params.update({"p3.down": "mp", "p4.down": "mp", "p5.down": "mp", "bu_p4.down": "conv", "bu_p5.down": "conv"})
    assert tiny.decode(params) == PRESETS["yolov7-tiny"]

    v7 = get_space("yolov7")
    params = {"width": 1.0, "activation": "silu", "spp": "sppcspc", "outputs": "repconv"}
    for level in ("p2", "p3", "p4", "p5"):
        params.update({f"{level}.depth": 4, f"{level}.pattern": "every2", f"{level}.hidden": 1.0, f"{level}.out": 1.0})
    for level in ("td_p4", "td_p3", "bu_p4", "bu_p5"):
        params.update({f"{level}.depth": 4, f"{level}.pattern": "all", f"{level}.hidden": 1.0, f"{level}.out": 1.0})
    params.update({"p3.down": "mpc", "p4.down": "mpc", "p5.down": "mpc", "bu_p4.down": "mpc", "bu_p5.down": "mpc"})
    assert v7.decode(params) == PRESETS["yolov7"]


def test_tiny_space_reaches_quarter_width():
    space = get_space("yolov7-tiny")
    width = {d.name: d for d in space.dimensions()}["width"]
    assert min(width.values()) == 0.25 and max(width.values()) == 1.0


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(SearchError, match=r"unknown search space .nope. \(known: yolov7-tiny, yolov7-tiny-cpu, yolov7\)"):
        get_space("nope")


def test_signature_changes_with_classes_and_space():
    assert get_space("yolov7-tiny", nc=5).signature() != get_space("yolov7-tiny", nc=80).signature()
    assert get_space("yolov7-tiny").signature() != get_space("yolov7").signature()
    assert get_space("yolov7").signature() == get_space("yolov7").signature()


def test_missing_parameter_is_one_clear_error():
    with pytest.raises(SearchError, match="missing parameter"):
        get_space("yolov7").decode({"width": 1.0})
