"""Run a small search in its own process (for the kill test): python -m tests.search._run_study DIR FIDELITY N."""
from __future__ import annotations

import sys
from pathlib import Path

from tests.search._helpers import SmallSpace, config  # also registers the test fidelities
from nas.search import run_search

if __name__ == "__main__":
    tmp, fidelity, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    cfg = config(tmp, space="small", fidelity=fidelity, trials=trials, sampler="random", seed=1)
    run_search(cfg, SmallSpace(), write=False)
