"""The weight-sharing supernet of a search space (Once-for-All style ``activate`` / ``extract``).

The supernet owns one tensor per *shared weight* (``stages.1.elan.chain.2.conv.weight``) at the
largest size any architecture of the space needs; every architecture of the space is a set of
slices of these tensors (see :mod:`nas.supernet._sharing` and docs/SUPERNET.md for the rules).

With a genome active, :meth:`Supernet.forward` runs *the very module* ``build_model(expand(genome))``
builds (kept as a weightless-in-spirit skeleton) through :func:`torch.func.functional_call`,
with each of its parameters and buffers replaced by its slice of the supernet — so the active
forward is the plain network by construction, gradients flow into the shared tensors, and
BatchNorm running statistics are updated in place in the shared buffers (prefix slices are
views). :func:`extract` copies the slices into a fresh plain :class:`~nas.build.Detector`.

``nas`` does not import ``search_spaces``: the space is handed in (anything with ``name``,
``nc``, ``signature()``, ``dimensions()``, ``active(params)`` and ``decode(params)``).
"""
from __future__ import annotations

import contextlib
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from nas.build import build_model, parameter_roles
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.expand import expand_with_slots
from nas.genome import Genome
from nas.supernet._sharing import Entry, plan_model

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "anchors", "anchor_grid")
_SKELETONS = 8          # plain skeletons kept per supernet (largest, smallest, a few random)


class SupernetError(NasError):
    """A genome or checkpoint that does not fit a supernet (one line)."""


# ----------------------------------------------------------------------------- the space
def space_params(space: Any, activation: str, pick) -> dict[str, Any]:
    """A parameter dict of ``space`` with the activation fixed; ``pick(dim)`` chooses the rest."""
    params: dict[str, Any] = {}
    for dim in space.dimensions():
        if dim.name in space.active(params):
            params[dim.name] = activation if dim.name == "activation" else pick(dim)
    return params


def sample_genome(space: Any, activation: str, rng: random.Random, mode: str = "random") -> Genome:
    """A genome of ``space``: ``largest`` / ``smallest`` take every numeric dimension at its top
    / bottom (categorical choices, which have no size order, are drawn at random); ``random``
    draws every dimension."""
    def pick(dim):
        values = dim.values()
        if dim.choices is None and mode == "largest":
            return values[-1]
        if dim.choices is None and mode == "smallest":
            return values[0]
        return rng.choice(values)

    return space.decode(space_params(space, activation, pick))


def covering_genomes(space: Any, activation: str) -> list[Genome]:
    """Genomes that together use every slot, path and input block of the space at full size.

    Every numeric dimension at its top (widths and depths only grow with it); the first choice
    of every categorical dimension, then each other choice of one dimension at a time (a layer's
    input depends on at most a few local choices, and blocks are unions, so one-at-a-time
    variation reaches every block).
    """
    dims = [d for d in space.dimensions() if d.choices is not None and d.name != "activation"]

    def genome(fixed: Mapping[str, Any]) -> Genome:
        return space.decode(space_params(
            space, activation,
            lambda d: fixed.get(d.name, d.choices[0] if d.choices is not None else d.values()[-1])))

    out = [genome({})]
    for dim in dims:
        for choice in dim.choices[1:]:
            g = genome({dim.name: choice})
            if g not in out:
                out.append(g)
    return out


def unfixed_signature(space: Any) -> str:
    """The signature of the space a supernet covers: with fixed dimensions (a one-shot search
    fixes the activation) undone, as the supernet was trained on the whole space."""
    return getattr(space, "unfixed", space).signature()


def build_plain(genome: Genome) -> tuple[nn.Module, list[str | None]]:
    """``build_model(expand(genome))`` and the row slots of that expansion."""
    cfg, slots = expand_with_slots(genome)
    return build_model(parse_cfg(cfg, source=f"genome {genome.genome_hash()}")), slots


def _initial(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Initial value of a shared tensor by its role (torch's and YOLOv7's defaults)."""
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if name in ("running_var", "weight") and len(shape) == 1:     # BatchNorm scale / variance
        return torch.ones(shape)
    if name == "implicit":                                        # YOLOR ImplicitA / ImplicitM
        return torch.randn(shape) * 0.02 + (1.0 if ".im." in key else 0.0)
    t = torch.zeros(shape)
    if name == "weight":
        nn.init.kaiming_uniform_(t, a=5 ** 0.5)
    return t


@contextlib.contextmanager
def _no_weight_init():
    """Skip torch's random weight initialisers while building a skeleton."""
    names = ("kaiming_uniform_", "uniform_", "normal_")
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


# ----------------------------------------------------------------------------- layouts
@dataclass
class _Layout:
    """Size of one shared tensor: dim 0 up to ``out``, input dim made of ``blocks``."""

    shape: tuple[int, ...]
    out: int | None
    in_dim: int
    blocks: dict[str, int] = field(default_factory=dict)   # space → most channels, in order
    buffer: bool = False

    def add(self, e: Entry) -> None:
        if e.out is not None:
            self.out = max(self.out or 0, e.out)
        for space, n in e.inputs or ():
            self.blocks[space] = max(self.blocks.get(space, 0), n)

    def full_shape(self) -> tuple[int, ...]:
        shape = list(self.shape)
        if self.out is not None:
            shape[0] = self.out
        if self.blocks:
            shape[self.in_dim] = sum(self.blocks.values())
        return tuple(shape)

    def index(self, e: Entry, where: str) -> torch.Tensor | None:
        """Positions of ``e``'s input channels in this tensor's input dim."""
        if e.inputs is None:
            return None
        offsets, pos = {}, 0
        for space, n in self.blocks.items():
            offsets[space] = pos
            pos += n
        idx = []
        for space, n in e.inputs:
            if space not in offsets or n > self.blocks[space]:
                raise SupernetError(f"{where}: input {space!r} ×{n} is not part of the supernet")
            idx.extend(range(offsets[space], offsets[space] + n))
        return torch.tensor(idx, dtype=torch.long)


@dataclass
class _Active:
    """A genome made ready to run: its plain skeleton and how to slice each of its tensors."""

    genome: Genome
    skeleton: nn.Module
    slices: list[tuple[str, str, int | None, torch.Tensor | None, int]]   # key, attr, out, idx, dim


def _unbuilt_role(super_key: str, shape: tuple[int, ...]) -> str:
    """The role of a shared tensor no covering genome builds (a RepConv identity BatchNorm that
    only some widths have): a bias, a 1-D scale (BatchNorm: no decay) or a conv weight."""
    leaf = super_key.rsplit(".", 1)[-1]
    return "bias" if leaf == "bias" else "decay" if leaf == "weight" and len(shape) > 1 else "other"


def _attr(super_key: str) -> str:
    return super_key.replace(".", "/")


class Supernet(nn.Module):
    """Every architecture of ``space`` (with ``activation``) as slices of shared tensors.

    Args:
        space: the search space (see the module docstring).
        activation: the one activation of every sub-network (activations are not shareable).
        seed: initial weights (each shared tensor starts from the seeded initial weights of the
            covering genomes, the largest written last).
    """

    def __init__(self, space: Any, activation: str = "silu", seed: int = 0):
        super().__init__()
        choices = next((d.choices for d in space.dimensions() if d.name == "activation"), ())
        if activation not in choices:
            raise SupernetError(f"activation {activation!r} is not a choice of space {space.name!r} "
                                f"({', '.join(choices)})")
        self.space = space
        self.activation = activation
        self.meta = {"space": space.name, "signature": unfixed_signature(space), "nc": int(space.nc),
                     "activation": activation}
        self._layouts: dict[str, _Layout] = {}
        self._cache: OrderedDict[Genome, _Active] = OrderedDict()
        self._active: _Active | None = None
        self._roles: dict[str, str] = {}        # shared tensor → optimizer role (nas.build)
        #: BatchNorm momentum of the sub-networks (None: the blocks' own, YOLOv7's 0.03)
        self.bn_momentum: float | None = None
        covering = covering_genomes(space, activation)
        base = None
        for i, g in enumerate(covering):
            if i == 0:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model, slots = build_plain(g)
            else:
                with _no_weight_init():
                    model, slots = build_plain(g)
            entries = plan_model(model, slots)
            buffers = {k for k, _ in model.named_buffers()}
            roles = parameter_roles(model)
            for e in entries:
                lay = self._layouts.get(e.super_key)
                if lay is None:
                    buffer = e.key in buffers or e.key.endswith(_BUFFER_SUFFIXES)
                    lay = self._layouts[e.super_key] = _Layout(e.shape, e.out, e.in_dim, buffer=buffer)
                if not lay.buffer and e.key in roles:
                    self._roles.setdefault(e.super_key, roles[e.key])
                lay.add(e)
            if i == 0:
                base = (model.state_dict(), entries)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for key, lay in self._layouts.items():
                t = _initial(key, lay.full_shape())
                if lay.buffer:
                    self.register_buffer(_attr(key), t)
                else:
                    self.register_parameter(_attr(key), nn.Parameter(t))
        with torch.no_grad():      # the largest genome's own initial weights where it has them
            state, entries = base
            for e in entries:
                if e.present and e.key in state:
                    self._write(e, state[e.key])

    def parameter_roles(self) -> dict[str, str]:
        """``{parameter name: role}`` of the shared tensors, each the role of the plain-model
        tensors it holds (a conv weight decays, a BatchNorm scale or bias does not), for
        :func:`nas.train.param_groups`."""
        return {_attr(key): self._roles.get(key) or _unbuilt_role(key, lay.full_shape())
                for key, lay in self._layouts.items() if not lay.buffer}

    # -- slicing ---------------------------------------------------------------------------
    def tensor(self, super_key: str) -> torch.Tensor:
        """The shared tensor called ``super_key``."""
        return getattr(self, _attr(super_key))

    def _write(self, e: Entry, value: torch.Tensor) -> None:
        t = self.tensor(e.super_key)
        if e.out is not None:
            t = t.narrow(0, 0, e.out)
        idx = self._layouts[e.super_key].index(e, e.key)
        if idx is None:
            t.copy_(value)
        else:
            t.index_copy_(e.in_dim, idx.to(t.device), value.to(t.dtype))

    def _prepare(self, genome: Genome) -> _Active:
        if genome.activation != self.activation:
            raise SupernetError(f"genome {genome.genome_hash()} uses activation {genome.activation!r} "
                                f"but this supernet was built for {self.activation!r}")
        if genome.nc != self.meta["nc"]:
            raise SupernetError(f"genome {genome.genome_hash()} has nc={genome.nc}, the supernet "
                                f"nc={self.meta['nc']}")
        hit = self._cache.get(genome)
        if hit is not None:
            self._cache.move_to_end(genome)
            return hit
        device = next(self.parameters()).device
        skeleton, slots = self._skeleton(genome, device)
        slices = []
        for e in plan_model(skeleton, slots):
            if not e.present:
                continue
            lay = self._layouts.get(e.super_key)
            where = f"genome {genome.genome_hash()}, {e.key}"
            if lay is None or (e.out is not None and e.out > (lay.out or 0)):
                raise SupernetError(f"{where}: {e.super_key} ×{e.out} is outside the supernet "
                                    "(a genome of another space or beyond its ranges?)")
            idx = lay.index(e, where)
            slices.append((e.key, _attr(e.super_key), e.out,
                           None if idx is None else idx.to(device), e.in_dim))
        active = _Active(genome, skeleton, slices)
        self._cache[genome] = active
        while len(self._cache) > _SKELETONS:
            self._cache.popitem(last=False)
        return active

    def _skeleton(self, genome: Genome, device: torch.device) -> tuple[nn.Module, list]:
        """The plain module of ``genome``, its weights left uninitialised (every persistent
        tensor is supplied from the shared ones at each forward; random init is most of the
        build time)."""
        with _no_weight_init():
            skeleton, slots = build_plain(genome)
        if self.bn_momentum is not None:
            for m in skeleton.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = self.bn_momentum
        return skeleton.to(device), slots

    def sub_state(self, genome: Genome | None = None) -> dict[str, torch.Tensor]:
        """The active (or ``genome``'s) plain state dict as slices of the shared tensors
        (differentiable; prefix slices are views of the shared storage)."""
        active = self._prepare(genome) if genome is not None else self._require_active()
        out = {}
        for key, attr, n, idx, dim in active.slices:
            t = getattr(self, attr)
            if n is not None:
                t = t.narrow(0, 0, n)
            if idx is not None:
                t = t.index_select(dim, idx)
            out[key] = t
        return out

    # -- Once-for-All interface ---------------------------------------------------------------
    def activate(self, genome: Genome) -> "Supernet":
        """Make ``genome`` the active sub-network (refused in one line when it does not fit)."""
        self._active = self._prepare(genome)
        return self

    @property
    def active_genome(self) -> Genome | None:
        return self._active.genome if self._active is not None else None

    @property
    def head(self) -> nn.Module:
        """The active sub-network's detect head (anchors and strides, for the loss)."""
        return self._require_active().skeleton.head

    def _require_active(self) -> _Active:
        if self._active is None:
            raise SupernetError("no sub-network is active; call activate(genome) first")
        return self._active

    def forward(self, x: torch.Tensor):
        active = self._require_active()
        active.skeleton.train(self.training)
        return torch.func.functional_call(active.skeleton, self.sub_state(), (x,), strict=False)

    def _apply(self, fn, recurse=True):
        genome = self.active_genome
        self._cache.clear()            # skeletons and indices live on the old device
        self._active = None
        out = super()._apply(fn, recurse)
        if genome is not None:
            self._active = self._prepare(genome)
        return out


def extract(supernet: Supernet, genome: Genome) -> nn.Module:
    """The plain :class:`~nas.build.Detector` of ``genome`` holding its inherited weights."""
    with torch.no_grad():
        state = {k: v.detach().clone() for k, v in supernet.sub_state(genome).items()}
    with torch.random.fork_rng(devices=[]):
        model, _ = build_plain(genome)
    ref = next(supernet.parameters())
    model.to(device=ref.device, dtype=ref.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SupernetError(f"extract: tensors not shared: {(missing + unexpected)[:3]}")
    return model
