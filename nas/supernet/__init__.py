"""One-shot NAS: a weight-sharing supernet of a search space, trained once, every candidate
scored with the weights it inherits (docs/SUPERNET.md).

Typical use::

    net = Supernet(space, activation="silu")       # every architecture of the space
    net.activate(genome)                            # forward now computes build_model(expand(genome))
    plain = extract(net, genome)                    # a plain Detector with the inherited weights
"""
from nas.supernet._supernet import (Supernet, SupernetError, build_plain, covering_genomes,
                                    extract, sample_genome, space_params)

from nas.supernet._train import (OneShotScore, OneShotScorer, SupernetConfig, SupernetEpoch,
                                 SupernetResult, check_meta, file_sha, inherited_model, load_supernet, pool_identity,
                                 read_checkpoint, recalibrate_bn, train_supernet)

__all__ = ["OneShotScore", "OneShotScorer", "Supernet", "SupernetConfig", "SupernetEpoch",
           "SupernetError", "SupernetResult", "build_plain", "check_meta", "covering_genomes", "file_sha", "inherited_model",
           "extract", "load_supernet", "pool_identity", "read_checkpoint", "recalibrate_bn", "sample_genome",
           "space_params", "train_supernet"]
