"""One-shot NAS: a weight-sharing supernet of a search space, trained once, every candidate
scored with the weights it inherits (docs/SUPERNET.md).

Typical use::

    net = Supernet(space, activation="silu")       # every architecture of the space
    net.activate(genome)                            # forward now computes build_model(expand(genome))
    plain = extract(net, genome)                    # a plain Detector with the inherited weights
"""
from nas.supernet._supernet import (Supernet, SupernetError, build_plain, covering_genomes,
                                    extract, sample_genome, space_params)

__all__ = ["Supernet", "SupernetError", "build_plain", "covering_genomes", "extract",
           "sample_genome", "space_params"]
