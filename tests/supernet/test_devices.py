"""A scored sub-network and its data sit on one device by construction: the scorer and the
BatchNorm re-estimation take the device from the model they are given. The machine has no
second real device, so the model side lives on PyTorch's ``meta`` device (tensors with shapes
and no data): a batch that was not moved there reaches the model as a CPU tensor."""
from __future__ import annotations

import inspect
import random

import pytest
import torch
from torch import nn

from nas.build import module_device
from nas.supernet import OneShotScorer, Supernet, recalibrate_bn, sample_genome


class _DeviceSpy(nn.Module):
    """A model with a BatchNorm on ``device`` that records the device of every input."""

    def __init__(self, device: str):
        super().__init__()
        self.bn = nn.BatchNorm2d(3, device=device)
        self.seen: list[torch.device] = []

    def forward(self, x):
        self.seen.append(x.device)
        return x


def test_recalibration_feeds_each_batch_on_the_models_device():
    spy = _DeviceSpy("meta")
    recalibrate_bn(spy, [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)])
    assert spy.seen == [torch.device("meta")] * 2
    assert spy.bn.momentum == 0.1 and spy.training          # restored afterwards


def test_the_scorer_takes_its_device_from_the_supernet(tiny_space, tiny_data):
    assert "device" not in inspect.signature(OneShotScorer).parameters   # no second source of truth
    net = Supernet(tiny_space, "relu", seed=0).to("meta")
    scorer = OneShotScorer(net, tiny_data, 64, calib_images=4, batch=2)
    assert scorer.device == torch.device("meta")
    assert {b.device for b in scorer.calib} == {torch.device("meta")}


def test_module_device_of_a_model_without_tensors_is_cpu():
    assert module_device(nn.ReLU()) == torch.device("cpu")
    assert module_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scoring_a_cuda_supernet_with_cpu_loaders(tiny_space, tiny_data):
    net = Supernet(tiny_space, "relu", seed=0).to("cuda")
    scorer = OneShotScorer(net, tiny_data, 64, calib_images=4, batch=2)
    genome = sample_genome(tiny_space, "relu", random.Random(0), "smallest")
    assert 0.0 <= scorer.score(genome).map50_95 <= 1.0
