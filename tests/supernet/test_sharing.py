"""The supernet computes exactly build_model(expand(genome)) with inherited weights, and shares
weights by the documented rules (docs/SUPERNET.md)."""
from __future__ import annotations

import random

import pytest
import torch

from nas.expand import expand_with_slots
from nas.fuse import fuse
from nas.supernet import Supernet, SupernetError, build_plain, extract, sample_genome
from search_spaces import get_space

MODES = ("largest", "smallest", "random", "random", "random")


def _genomes(space, activation, seed=0, modes=MODES):
    rng = random.Random(seed)
    return [sample_genome(space, activation, rng, mode) for mode in modes]


def _layer(model, genome, slot):
    """The plain model's layer written under ``slot``."""
    _cfg, slots = expand_with_slots(genome)
    return model.layers[slots.index(slot)]


def test_every_weighted_row_has_a_unique_slot(tiny_space):
    for genome in _genomes(tiny_space, "leakyrelu"):
        cfg, slots = expand_with_slots(genome)
        rows = cfg["backbone"] + cfg["head"]
        assert len(slots) == len(rows)
        named = [s for s in slots if s is not None]
        assert len(named) == len(set(named))
        for row, slot in zip(rows, slots):
            weighted = row[2] in ("Conv", "RepConv", "SPPCSPC", "SPPF", "SPP", "IDetect", "Detect")
            assert weighted == (slot is not None), (row, slot)


@pytest.mark.parametrize("space_name,activation", [("yolov7-tiny", "leakyrelu"), ("yolov7", "silu")])
def test_active_forward_equals_extracted_plain_model(space_name, activation, tiny_space, tiny_supernet):
    if space_name == "yolov7-tiny":
        space, net = tiny_space, tiny_supernet
        genomes = _genomes(space, activation)
    else:
        space = get_space(space_name, nc=3)
        net = Supernet(space, activation)
        genomes = _genomes(space, activation, modes=("largest", "smallest", "random"))
    x = torch.rand(2, 3, 64, 64)
    for genome in genomes:
        net.activate(genome).eval()
        with torch.no_grad():
            y_super = net(x)[0]
        plain = extract(net, genome).eval()
        # the extracted model is the very architecture build_model(expand(genome)) makes
        reference, _ = build_plain(genome)
        assert [type(m) for m in plain.modules()] == [type(m) for m in reference.modules()]
        assert {k: v.shape for k, v in plain.state_dict().items()} == \
            {k: v.shape for k, v in reference.state_dict().items()}
        with torch.no_grad():
            y_plain = plain(x)[0]
        assert (y_super - y_plain).abs().max().item() <= 1e-5


def test_deploy_fused_extraction_equals_active_forward(tiny_space):
    net = Supernet(tiny_space, "silu").double()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    for genome in _genomes(tiny_space, "silu", seed=3):
        net.activate(genome).eval()
        with torch.no_grad():
            y_super = net(x)[0]
            y_fused = fuse(extract(net, genome)).eval()(x)[0]
        assert (y_super - y_fused).abs().max().item() <= 1e-5


def test_depth_is_a_prefix_and_widths_are_leading_slices(tiny_space, tiny_supernet):
    big = sample_genome(tiny_space, "leakyrelu", random.Random(0), "largest")
    stage = big.stages[2]
    small_elan = stage.elan.__class__(2, "all", stage.elan.entry - 8, stage.elan.chain - 16,
                                      stage.elan.out - 8)
    small = big.replace_at("stages[2].elan", small_elan)
    wide, narrow = extract(tiny_supernet, big), extract(tiny_supernet, small)
    for j in range(2):   # the chain of depth 2 is the first two convs of the depth-4 chain
        w_big = _layer(wide, big, f"stages.2.elan.chain.{j}").conv.weight
        w_small = _layer(narrow, small, f"stages.2.elan.chain.{j}").conv.weight
        c2, c1 = w_small.shape[:2]
        assert torch.equal(w_small, w_big[:c2, :c1])
    bn_big = _layer(wide, big, "stages.2.elan.entry_a").bn
    bn_small = _layer(narrow, small, "stages.2.elan.entry_a").bn
    n = bn_small.weight.numel()
    assert torch.equal(bn_small.weight, bn_big.weight[:n])
    assert torch.equal(bn_small.running_var, bn_big.running_var[:n])


def test_transition_takes_the_input_slices_of_the_concatenated_members(tiny_space, tiny_supernet):
    """every2 vs all on the same depth-4 ELAN: the transition's columns for chain 3, chain 1 and
    the two entries are the same weights; 'all' adds columns for chains 2 and 0."""
    base = sample_genome(tiny_space, "leakyrelu", random.Random(5), "largest")
    stage = base.stages[1]

    def with_pattern(pattern):
        return base.replace_at("stages[1].elan.pattern", pattern).replace_at("stages[1].elan.depth", 4)

    g2, ga = with_pattern("every2"), with_pattern("all")
    t2 = _layer(extract(tiny_supernet, g2), g2, "stages.1.elan.transition").conv.weight
    ta = _layer(extract(tiny_supernet, ga), ga, "stages.1.elan.transition").conv.weight
    c, e = stage.elan.chain, stage.elan.entry
    # every2 concat order: chain3, chain1, entry_b, entry_a; all: chain3, chain2, chain1, chain0, entry_b, entry_a
    assert t2.shape[1] == 2 * c + 2 * e and ta.shape[1] == 4 * c + 2 * e
    assert torch.equal(t2[:, :c], ta[:, :c])                      # chain 3
    assert torch.equal(t2[:, c:2 * c], ta[:, 2 * c:3 * c])        # chain 1
    assert torch.equal(t2[:, 2 * c:], ta[:, 4 * c:])              # entries
    assert not torch.equal(ta[:, c:2 * c], ta[:, 2 * c:3 * c])    # chain 2 has weights of its own


def test_repconv_and_conv_outputs_share_the_3x3_kernel(tiny_space, tiny_supernet):
    g_rep = sample_genome(tiny_space, "leakyrelu", random.Random(2), "largest")
    g_rep = g_rep.replace(outputs=g_rep.outputs.__class__("repconv", g_rep.outputs.widths))
    g_conv = g_rep.replace(outputs=g_rep.outputs.__class__("conv", g_rep.outputs.widths))
    rep = _layer(extract(tiny_supernet, g_rep), g_rep, "outputs.0")
    conv = _layer(extract(tiny_supernet, g_conv), g_conv, "outputs.0")
    assert torch.equal(rep.rbr_dense[0].weight, conv.conv.weight)
    assert rep.rbr_1x1[0].weight.shape[-1] == 1


def test_gradients_reach_only_the_active_slices(tiny_space):
    net = Supernet(tiny_space, "relu")
    genome = sample_genome(tiny_space, "relu", random.Random(0), "smallest")
    net.activate(genome).train()
    out = net(torch.rand(2, 3, 64, 64))
    sum(o.float().pow(2).mean() for o in out).backward()
    depth = genome.stages[0].elan.depth
    assert net.tensor("stages.0.elan.chain.0.conv.weight").grad.abs().sum() > 0
    unused = net.tensor(f"stages.0.elan.chain.{depth}.conv.weight").grad
    assert unused is None or unused.abs().sum() == 0
    w = net.tensor("stages.0.elan.entry_a.conv.weight").grad
    c = genome.stages[0].elan.entry
    assert w[c:].abs().sum() == 0 and w[:c].abs().sum() > 0


def test_batchnorm_statistics_update_the_shared_buffers(tiny_space):
    net = Supernet(tiny_space, "relu")
    genome = sample_genome(tiny_space, "relu", random.Random(0), "smallest")
    before = net.tensor("stem.0.bn.running_mean").clone()
    net.activate(genome).train()
    net(torch.rand(2, 3, 64, 64) + 1.0)
    after = net.tensor("stem.0.bn.running_mean")
    c = genome.stem[0].width
    assert not torch.equal(after[:c], before[:c])
    assert torch.equal(after[c:], before[c:])


def test_genomes_that_do_not_fit_are_refused_in_one_line(tiny_space, tiny_supernet):
    silu = sample_genome(tiny_space, "silu", random.Random(0), "random")
    with pytest.raises(SupernetError, match="activation 'silu'.*'leakyrelu'") as err:
        tiny_supernet.activate(silu)
    assert "\n" not in str(err.value)
    other_nc = sample_genome(tiny_space, "leakyrelu", random.Random(0), "random").replace(nc=7)
    with pytest.raises(SupernetError, match="nc=7"):
        tiny_supernet.activate(other_nc)
    wider = sample_genome(tiny_space, "leakyrelu", random.Random(0), "largest")
    wider = wider.replace(spp=wider.spp.__class__(wider.spp.kind, wider.spp.width * 2))
    with pytest.raises(SupernetError, match="outside the supernet"):
        extract(tiny_supernet, wider)
    with pytest.raises(SupernetError, match="not a choice"):
        Supernet(tiny_space, "gelu")
