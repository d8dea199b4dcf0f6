"""Training the supernet (sandwich rule, SimOTA loss, warm-up + cosine, EMA, resumable) and
scoring a sub-network with its inherited weights (BatchNorm re-estimated, val mAP)."""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from nas.build import module_device
from nas.data import DataConfig, collate, load_data_config, make_loader, scan_split
from nas.errors import NasError
from nas.evaluate import evaluate, ground_truth, make_eval_loader
from nas.genome import Genome
from nas.loss import DetectionLoss
from nas.supernet._supernet import Supernet, SupernetError, extract, sample_genome, unfixed_signature
from nas.train._loop import _atomic_save
from nas.train._optim import NOMINAL_BATCH, ModelEMA, Schedule, build_optimizer

FORMAT = "y7nas-supernet/1"


@dataclass(frozen=True)
class SupernetConfig:
    """Supernet training settings.

    Attributes:
        epochs, img, batch, seed: the run.
        activation: the one activation of every sub-network.
        random_subnets: random sub-networks per step besides the largest and the smallest
            (sandwich rule, BigNAS); their gradients are summed before one optimizer step.
        distill: in-place distillation: every other sub-network also matches the largest one's
            sigmoid outputs (mean squared error, weight ``distill_weight``).
        optimizer, lr, lrf, warmup_epochs, weight_decay, momentum: as ``y7nas train``
            (AdamW by default, as the proxy recipe: it learns far more than SGD on short runs).
        bn_momentum: BatchNorm momentum while training (sub-networks change every step).
        subset: train on a fixed seeded subset of this many images (None: all).
        calib_images: training images whose BatchNorm statistics a scored sub-network uses.
        val_subset: score on this many val images (None: all).
        shards: each batch is split into this many pieces whose gradients are summed (BatchNorm
            statistics per piece). Under ``torchrun`` with W processes every process loads only
            the pieces ``rank, rank + W, …`` of each batch (at least W pieces, :class:`RankBatches`),
            so a W-process run equals a one-process run with ``shards=W`` (data parallel, tested
            with gloo); with ``device="cuda"`` process r uses cuda:LOCAL_RANK.
    """

    epochs: int = 30
    img: int = 160
    batch: int = 16
    seed: int = 0
    activation: str = "silu"
    random_subnets: int = 2
    distill: bool = False
    distill_weight: float = 1.0
    optimizer: str = "adamw"
    lr: float = 0.01
    lrf: float = 0.01
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    momentum: float = 0.937
    bn_momentum: float = 0.1
    subset: int | None = None
    calib_images: int = 64
    val_subset: int | None = None
    shards: int = 1
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        checks = [(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}"),
                  (self.img >= 32 and self.img % 32 == 0, f"img must be a multiple of 32 (≥ 32), got {self.img}"),
                  (self.batch >= 1, f"batch must be ≥ 1, got {self.batch}"),
                  (self.random_subnets >= 0, f"random sub-networks must be ≥ 0, got {self.random_subnets}"),
                  (self.calib_images >= 1, f"calibration images must be ≥ 1, got {self.calib_images}"),
                  (self.shards >= 1, f"shards must be ≥ 1, got {self.shards}"),
                  (self.lr > 0, f"lr must be positive, got {self.lr}"),
                  (self.threads is None or self.threads >= 1, f"threads must be ≥ 1, got {self.threads}")]
        for ok, message in checks:
            if not ok:
                raise NasError(message)

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (device/threads excluded)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "threads")}


@dataclass(frozen=True)
class SupernetEpoch:
    epoch: int
    loss: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class SupernetResult:
    path: Path
    epochs: int
    seconds: float
    map50_95_largest: float
    map50_95_smallest: float
    resumed_from: int


# ----------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: str | Path) -> dict:
    """The supernet file as saved (``torch.load(..., weights_only=True)``), checked for shape."""
    path = Path(path)
    if not path.is_file():
        raise SupernetError(f"{path}: supernet file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise SupernetError(f"{path}: not a y7nas supernet file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("meta"), dict) \
            or ckpt["meta"].get("format") != FORMAT or not isinstance(ckpt.get("state_dict"), dict):
        raise SupernetError(f"{path}: not a y7nas supernet file (no {FORMAT} metadata)")
    return ckpt


def file_sha(path: str | Path) -> str:
    """First 16 hex digits of the file's sha256 (a study records which supernet scored it)."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise SupernetError(f"{path}: supernet file not found")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_supernet(path: str | Path, space: Any, device: str = "cpu") -> Supernet:
    """The trained supernet in ``path`` for ``space`` (its name, signature and class count must
    be the file's; one line naming the mismatch otherwise)."""
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    check_meta(meta, path, space=space.name, nc=space.nc, signature=unfixed_signature(space))
    if not meta.get("complete"):
        raise SupernetError(f"{path}: training stopped after epoch {meta.get('epochs_done')} of "
                            f"{meta.get('epochs')}; re-run 'y7nas supernet train' to finish it")
    net = Supernet(space, meta["activation"], seed=int(meta["settings"]["seed"]))
    net.load_state_dict(ckpt["state_dict"])
    net.meta.update(img=meta["img"], epochs=meta["epochs"])
    return net.to(device)


def inherited_model(path: str | Path, genome: Genome, space: Any, device: str = "cpu",
                    calib: Sequence[torch.Tensor] | None = None) -> nn.Module:
    """The plain network of ``genome`` with the weights it inherits from the supernet in
    ``path`` (BatchNorm re-estimated on ``calib`` batches when given): the starting point of
    ``y7nas train --init-from`` and of fine-tuned finalists."""
    net = load_supernet(path, space, device=device)
    model = extract(net, genome)
    return recalibrate_bn(model, calib) if calib else model


def check_meta(meta: dict, path: str | Path, **expected: Any) -> None:
    """One line naming the first of ``expected`` (space, signature, nc, img, activation) that the
    supernet file's metadata does not match."""
    for key, want in expected.items():
        if want is not None and meta.get(key) != want:
            raise SupernetError(f"{path}: supernet {key} is {meta.get(key)!r}, the search needs {want!r}")


# ----------------------------------------------------------------------------- data parallel
def collective_device() -> torch.device:
    """Where this process's collective tensors live: its current CUDA device under the nccl
    backend (NCCL takes CUDA tensors only), the CPU otherwise (gloo, or no process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def process_device(device: torch.device, world: int, local_rank: int) -> torch.device:
    """The device of one of ``world`` processes: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU
    per process, as ``torchrun`` numbers them on a node); an explicit ``cuda:N`` with several
    processes is refused (every process would share GPU N)."""
    if device.type != "cuda" or world <= 1:
        return device
    if device.index is not None:
        raise SupernetError(f"device {device} with {world} processes: each process takes cuda:LOCAL_RANK; "
                            f"use --device cuda")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class _Group:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")   # where collective tensors live: collective_device()

    @classmethod
    def join(cls, device: torch.device) -> tuple["_Group", torch.device]:
        """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
        nccl on CUDA, after binding this process to cuda:LOCAL_RANK); a single process when there
        is none. Returns the group and this process's model device."""
        import torch.distributed as dist

        if not dist.is_available():
            return cls(), device
        ready = dist.is_initialized()
        world = dist.get_world_size() if ready else int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(), device
        rank = dist.get_rank() if ready else int(os.environ.get("RANK", "0"))
        device = process_device(device, world, int(os.environ.get("LOCAL_RANK", rank)))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not ready:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), collective_device()), device

    def sum_gradients(self, params: list[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes (one flat all-reduce on the group's
        device); a parameter no process gave a gradient keeps none, so the optimizer skips it as
        in one process."""
        if self.world == 1:
            return
        import torch.distributed as dist

        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params]).to(self.device)
        dist.all_reduce(flags)
        dist.all_reduce(flat)
        offset = 0
        for p, flag in zip(params, flags.tolist()):
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.device, copy=True) if flag else None
            offset += n

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t)

    def barrier(self) -> None:
        """Wait for every process (an all-reduce on the group's device, so nccl needs no guess
        of which GPU a barrier uses)."""
        self.sum(0.0)


def shard_bounds(size: int, pieces: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` of each of ``pieces`` consecutive shards of a batch of ``size`` (some empty
    when ``size < pieces``)."""
    return [(round(j * size / pieces), round((j + 1) * size / pieces)) for j in range(pieces)]


def _cut(images: torch.Tensor, targets: torch.Tensor, parts: Sequence[tuple[int, int, int]]
         ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(j, images[lo:hi], targets of those images re-indexed from 0)`` for each ``(j, lo, hi)``."""
    out = []
    for j, lo, hi in parts:
        keep = (targets[:, 0] >= lo) & (targets[:, 0] < hi)
        t = targets[keep].clone()
        t[:, 0] -= lo
        out.append((j, images[lo:hi], t))
    return out


class RankBatches:
    """Batch sampler of one process's share of every step.

    The epoch's order is ``sampler``'s (the same seeded permutation in every process); step ``i``
    is its global batch ``order[i*batch:(i+1)*batch]``, cut into ``pieces`` shards
    (:func:`shard_bounds`), and this process loads only the shards ``j`` with
    ``j % world == rank``, concatenated. So the processes' shares of an epoch are disjoint and
    together are the epoch, and a step is the same images in every world size. Every step
    yields a list, empty when a short last batch leaves this process no shard (it still takes
    part in the step's all-reduce).
    """

    def __init__(self, sampler: Any, batch: int, pieces: int, rank: int = 0, world: int = 1):
        self.sampler, self.batch, self.pieces, self.rank, self.world = sampler, batch, pieces, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch)

    def step_size(self, i: int) -> int:
        """Images in the global batch of step ``i`` (all processes together)."""
        return min(self.batch, len(self.sampler) - i * self.batch)

    def layout(self, i: int) -> list[tuple[int, int, int]]:
        """``(j, lo, hi)``: where this process's non-empty shard ``j`` of step ``i`` lies in the
        batch it loads."""
        parts, offset = [], 0
        for j, (lo, hi) in enumerate(shard_bounds(self.step_size(i), self.pieces)):
            if j % self.world == self.rank and hi > lo:
                parts.append((j, offset, offset + hi - lo))
                offset += hi - lo
        return parts

    def __iter__(self):
        keys = list(self.sampler)
        for i in range(len(self)):
            step = keys[i * self.batch:(i + 1) * self.batch]
            bounds = shard_bounds(len(step), self.pieces)
            yield [key for j, (lo, hi) in enumerate(bounds) if j % self.world == self.rank for key in step[lo:hi]]


def _collate_or_none(items: Sequence[Any]):
    """:func:`nas.data.collate`, None for a process's empty share of a step."""
    return collate(items) if items else None


def rank_loader(split: Any, config: "SupernetConfig", rank: int = 0, world: int = 1) -> DataLoader:
    """The augmented training loader of process ``rank`` of ``world``: its :class:`RankBatches`
    share of every global batch of ``config.batch`` images (``config.shards`` pieces)."""
    base = make_loader(split, img=config.img, batch=config.batch, augment=True, seed=config.seed,
                       subset=config.subset, shuffle=True)
    batches = RankBatches(base.sampler, config.batch, config.shards, rank, world)
    return DataLoader(base.dataset, batch_sampler=batches, collate_fn=_collate_or_none)


# ----------------------------------------------------------------------------- training
def _distill_loss(outputs: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(torch.mean((o.sigmoid() - t.sigmoid()) ** 2) for o, t in zip(outputs, teacher))


def train_supernet(space: Any, data: str | Path | DataConfig, out: str | Path,
                   config: SupernetConfig | None = None, *,
                   on_step: Callable[[int, int, int, float], None] | None = None,
                   on_epoch: Callable[[SupernetEpoch], None] | None = None,
                   random_pool: Sequence[Genome] | None = None) -> SupernetResult:
    """Train the supernet of ``space`` on ``data`` and save it to ``out``.

    Each step trains the largest, the smallest and ``random_subnets`` random sub-networks on the
    same batch and takes one optimizer step on the summed gradients. With ``random_pool`` (e.g.
    the architectures of a budget's band: :func:`nas.search.draw_in_band`) the random ones are
    drawn from it instead of the whole space, so the weights are shared most by the sub-networks
    the search will choose among (AttentiveNAS's budget-aware sampling); the file records the
    pool's identity (:func:`pool_identity`) and a resume with another pool is refused. After every epoch ``out``
    is rewritten atomically with the EMA weights, the training state and metadata, so running
    the same call again after a crash resumes after the last finished epoch (and a finished file
    with the same settings is only re-scored). Other settings than the file's are refused.

    Under ``torchrun`` (W processes) the processes share every step as ``SupernetConfig.shards``
    says; rank 0 writes every checkpoint, and at the end scores the result and writes the final
    file while the others return at once (their result's mAPs are NaN).
    """
    from nas.profile import resolve_device

    config = config or SupernetConfig()
    out = Path(out)
    t_start = time.perf_counter()
    group, device = _Group.join(resolve_device(config.device))
    if config.shards % group.world and config.shards > 1:
        raise SupernetError(f"shards ({config.shards}) must be a multiple of the {group.world} processes")
    config = dataclasses.replace(config, shards=max(config.shards, group.world))
    data_cfg = data if isinstance(data, DataConfig) else load_data_config(data)
    if data_cfg.nc != space.nc:
        raise SupernetError(f"the data has {data_cfg.nc} classes but the space was made for {space.nc}")
    meta = {"format": FORMAT, "space": space.name, "signature": unfixed_signature(space), "nc": int(space.nc),
            "img": config.img, "activation": config.activation, "epochs": config.epochs,
            "settings": config.settings(), "data": str(data_cfg.source) if data_cfg.source else None,
            "epochs_done": 0, "complete": False}
    pool = tuple(random_pool or ())
    wrong = next((g for g in pool if g.activation != config.activation), None)
    if wrong is not None:
        raise SupernetError(f"the random pool's genome {wrong.genome_hash()} uses {wrong.activation}, the "
                            f"supernet {config.activation}")
    meta["random_pool"] = pool_identity(pool)
    previous = read_checkpoint(out) if out.exists() else None
    if previous is not None:
        old = previous["meta"]
        check_meta(old, out, **{key: meta[key] for key in ("space", "signature", "nc", "activation")})
        for key, value in config.settings().items():
            if old["settings"].get(key) != value:
                raise SupernetError(f"{out}: was trained with {key}={old['settings'].get(key)!r}, not "
                                    f"{value!r}; use another -o or the same settings to resume")
        if old.get("random_pool") != meta["random_pool"]:
            raise SupernetError(f"{out}: was trained with random sub-networks from "
                                f"{_pool_text(old.get('random_pool'))}, not from {_pool_text(meta['random_pool'])}; "
                                f"use another -o or the same pool to resume")
    out.parent.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        net = Supernet(space, config.activation, seed=config.seed).to(device)
        train_split, val_split = scan_split(data_cfg, "train"), scan_split(data_cfg, "val")
        loader = rank_loader(train_split, config, group.rank, group.world)
        steps: RankBatches = loader.batch_sampler
        nb = len(loader)
        if nb == 0:
            raise SupernetError("no training images")
        opt = build_optimizer(net, config.optimizer, config.lr, config.momentum,
                              config.weight_decay * config.batch / NOMINAL_BATCH)
        total = config.epochs * nb
        sched = Schedule(opt, total, min(round(config.warmup_epochs * nb), total // 4), config.lr,
                         config.lrf, config.momentum, 0.8, 0.1)
        ema = ModelEMA(net)      # before any sub-network is active: no skeletons to copy
        net.bn_momentum = config.bn_momentum
        net.activate(sample_genome(space, config.activation, random.Random(config.seed), "largest"))
        loss_fn = DetectionLoss(net.head, config.img)   # anchors and strides: the same in all
        start = 0
        if previous is not None:
            state = previous.get("train_state")
            start = int(previous["meta"]["epochs_done"])
            if state is not None:
                net.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                ema.updates = int(state["ema_updates"])
            with torch.no_grad():
                ema.module.load_state_dict(previous["state_dict"])
        for epoch in range(start + 1, config.epochs + 1):
            t0 = time.perf_counter()
            steps.set_epoch(epoch - 1)
            net.train()
            total_loss, n = 0.0, 0
            lr = config.lr
            for i, batch in enumerate(loader):
                lr = sched.step((epoch - 1) * nb + i)
                rng = random.Random(f"{config.seed}:{epoch}:{i}")
                genomes = [sample_genome(space, config.activation, rng, mode)
                           for mode in ("largest", "smallest")]
                genomes += [rng.choice(pool) if pool else sample_genome(space, config.activation, rng, "random")
                            for _ in range(config.random_subnets)]
                mine = [] if batch is None else [(j, x.to(device), t.to(device)) for j, x, t in
                                                 _cut(batch[0], batch[1], steps.layout(i))]
                opt.zero_grad(set_to_none=True)
                step_loss, teachers = 0.0, {}
                for k, genome in enumerate(genomes):
                    net.activate(genome)
                    for j, x, t in mine:
                        outputs = net(x)
                        loss, _items = loss_fn(outputs, t)
                        if config.distill:
                            if k == 0:
                                teachers[j] = [o.detach() for o in outputs]
                            else:
                                loss = loss + config.distill_weight * x.shape[0] * _distill_loss(outputs, teachers[j])
                        if not math.isfinite(float(loss.detach())):
                            raise SupernetError(f"non-finite loss at epoch {epoch}")
                        loss.backward()
                        step_loss += float(loss.detach())
                group.sum_gradients([p for p in net.parameters()])
                step_loss = group.sum(step_loss) / steps.step_size(i)
                opt.step()
                ema.update()
                total_loss += step_loss
                n += 1
                if on_step is not None:
                    on_step(epoch, i + 1, nb, step_loss)
            meta.update(epochs_done=epoch)
            if group.rank == 0:          # one checkpoint writer
                _atomic_save({"meta": dict(meta), "state_dict": ema.module.state_dict(),
                              "train_state": {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                              "ema_updates": ema.updates}}, out)
            group.barrier()
            if on_epoch is not None:
                on_epoch(SupernetEpoch(epoch, total_loss / max(n, 1), lr, time.perf_counter() - t0))
        final = ema.module
        final.eval()
        if group.rank != 0:     # rank 0 alone scores and writes the final file; nobody waits for it
            return SupernetResult(out, config.epochs, time.perf_counter() - t_start, float("nan"),
                                  float("nan"), start)
        rng = random.Random(f"{config.seed}:final")
        scorer = OneShotScorer(final, data_cfg, config.img, calib_images=config.calib_images,
                               val_subset=config.val_subset, seed=config.seed, batch=config.batch,
                               splits=(train_split, val_split))
        maps = {mode: scorer.score(sample_genome(space, config.activation, rng, mode)).map50_95
                for mode in ("largest", "smallest")}
        meta.update(complete=True, map50_95_largest=maps["largest"], map50_95_smallest=maps["smallest"])
        _atomic_save({"meta": dict(meta), "state_dict": final.state_dict()}, out)
    finally:
        torch.set_num_threads(old_threads)
    return SupernetResult(out, config.epochs, time.perf_counter() - t_start, maps["largest"],
                          maps["smallest"], start)


def pool_identity(pool: Sequence[Genome]) -> dict[str, Any] | None:
    """What a supernet file records of its random pool: its size and a digest of its genome
    hashes in order (None: random sub-networks from the whole space)."""
    if not pool:
        return None
    import hashlib

    digest = hashlib.sha256(",".join(g.genome_hash() for g in pool).encode()).hexdigest()[:16]
    return {"size": len(pool), "digest": digest}


def _pool_text(identity: Mapping[str, Any] | None) -> str:
    return "the whole space" if not identity else f"a pool of {identity['size']} ({identity['digest']})"


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics of ``model`` as the plain average over
    ``batches`` (inherited statistics belong to the sub-networks trained together); each batch
    goes to the model's device."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None        # cumulative average
    was = model.training
    device = module_device(model)
    model.train()
    try:
        for x in batches:
            model(x.to(device, non_blocking=True))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was)
    return model


@dataclass(frozen=True)
class OneShotScore:
    map50: float
    map50_95: float
    seconds: float


class OneShotScorer:
    """Scores genomes with weights inherited from ``supernet``: extract, re-estimate BatchNorm
    on ``calib_images`` fixed seeded training images, val mAP (``val_subset`` images or all).

    Everything runs on the supernet's device: the scorer takes it from the supernet it is given
    (there is no device argument), so a sub-network and its calibration or val images cannot
    sit on two devices."""

    def __init__(self, supernet: Supernet, data: str | Path | DataConfig, img: int,
                 calib_images: int = 64, val_subset: int | None = None, seed: int = 0,
                 batch: int = 16, splits=None):
        data_cfg = data if isinstance(data, DataConfig) else load_data_config(data)
        train_split, val_split = splits or (scan_split(data_cfg, "train"), scan_split(data_cfg, "val"))
        self.supernet, self.img, self.device = supernet, img, module_device(supernet)
        calib = make_loader(train_split, img=img, batch=batch, augment=False, seed=seed,
                            subset=min(calib_images, len(train_split)), shuffle=False)
        self.calib = [images.to(self.device) for images, _t, _m in calib]
        self.val_split = val_split
        self.val_loader = make_eval_loader(val_split, img, batch, val_subset, seed)
        self.gt = ground_truth(val_split, [int(i) for i in self.val_loader.sampler.indices])
        self.batch = batch

    def model(self, genome: Genome) -> nn.Module:
        """The plain network of ``genome`` with inherited weights and re-estimated BatchNorm."""
        return recalibrate_bn(extract(self.supernet, genome), self.calib).eval()

    def score(self, genome: Genome) -> OneShotScore:
        t0 = time.perf_counter()
        model = self.model(genome)
        res = evaluate(model, self.val_split, self.img, self.batch, loader=self.val_loader, gt=self.gt)
        return OneShotScore(res.map50, res.map50_95, time.perf_counter() - t0)
