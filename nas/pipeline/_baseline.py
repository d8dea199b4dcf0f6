"""The hand design a study's finalists are compared with (``--baseline``).

``preset`` (the default) is the preset the space is built around; a preset name or a YAML file
names another; ``none`` leaves it out. With the study's budget it is compound-scaled down until it
fits (:mod:`scaling.baseline`), measured the way the study measures its trials (deploy form, the
study's deployment size and latency settings). A one-shot study's hand design takes the supernet's
activation, so it can inherit weights like the finalists.
"""
from __future__ import annotations

from typing import Any, Callable

#: EfficientNet's α, β, γ (as `y7nas scale` and the family)
COEFFICIENTS = (1.2, 1.1, 1.15)


def study_baseline(spec: str, study_cfg: Any, space: Any, say: Callable[[str], None] = lambda line: None
                   ) -> tuple[str, Any] | None:
    """(name, genome) of the hand design for the study ``study_cfg`` (a SearchConfig) searched in
    ``space``; None for ``none``. Shrunk to the study's budget when over it."""
    from nas.search import budget_of, deploy_costs
    from scaling.baseline import fit_to_budget, hand_design
    from scaling.coefficients import Coefficients

    activation = None
    if study_cfg.fidelity == "oneshot":
        fixed = next((d.choices for d in space.dimensions() if d.name == "activation"), None)
        activation = fixed[0] if fixed is not None and len(fixed) == 1 else None
    found = hand_design(spec, space, activation)
    if found is None:
        return None
    name, genome = found
    budget = budget_of(study_cfg.constraints)
    if budget is None:
        return name, genome
    meter = study_cfg.latency_meter() if budget.metric == "latency_ms" else None
    cost = lambda g: deploy_costs(g, study_cfg.cost_img, meter)[budget.metric]      # noqa: E731
    before = cost(genome)
    genome, phi = fit_to_budget(genome, Coefficients(*COEFFICIENTS), cost, budget.limit)
    if phi < 0:
        name = f"{name} phi={phi:.2f}"
        say(f"hand design {name}: compound-scaled down (depth x{COEFFICIENTS[0] ** phi:.3f}, width "
            f"x{COEFFICIENTS[1] ** phi:.3f}) from {before:.4g} to {cost(genome):.4g} {budget.metric} to fit "
            f"the budget {budget.limit:.4g}")
    return name, genome


__all__ = ["COEFFICIENTS", "study_baseline"]
