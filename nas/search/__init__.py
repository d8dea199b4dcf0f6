"""Multi-objective architecture search over a search space (Optuna), resumable and parallel.

The runner takes a *space object* (anything with ``name``, ``nc``, ``dimensions()``,
``signature()`` and ``suggest(trial) -> Genome``; see ``search_spaces``) — ``nas`` never imports
``search_spaces``; the CLI resolves space names.

Typical use::

    from nas.search import SearchConfig, run_search
    from search_spaces import get_space

    cfg = SearchConfig(study="s1", space="yolov7-tiny", trials=30, img=160)
    summary = run_search(cfg, get_space("yolov7-tiny", nc=5))
"""
from nas.search._band import current_trial_budget, deploy_costs, draw_in_band, fill_band, search_filling_band
from nas.search._choice import (DEFAULT_BAND, DEFAULT_ESTIMATOR, ESTIMATORS, Budget, band_rows, budget_of,
                                choose_in_band, get_estimator, parse_band, rank_rows)
from nas.search._config import SAMPLERS, SearchConfig, check_image_size, constraint_values, make_sampler, population_size
from nas.search._fidelity import (FIDELITIES, EvalContext, Fidelity, FlopsFidelity, ProxyTrainFidelity,
                                  ZeroCostFidelity, get_fidelity, register_fidelity)
from nas.search._finalists import FinalistsResult, check_finalist_options, hand_design_verdict, spread_indices, train_finalists
from nas.search._objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Objective, parse_objectives
from nas.search._pareto import dominates, hypervolume_2d, pareto_front, pareto_rows
from nas.search._plot import ParetoPlotData, PlotPoint, ReferencePoint, draw_pareto, pareto_plot_data
from nas.search._results import records, write_results
from nas.search._runner import (Evaluator, Progress, ProgressUpdate, SearchSummary, export_trial,
                                load_study_config, open_results_study, open_study, progress_update,
                                run_search, run_worker, write_study_results)
from nas.search._storage import StudyStorage, open_storage

__all__ = [
    "Budget", "check_finalist_options", "DEFAULT_BAND", "DEFAULT_ESTIMATOR", "ESTIMATORS", "band_rows", "budget_of", "choose_in_band",
    "current_trial_budget", "deploy_costs", "draw_in_band", "fill_band", "search_filling_band", "get_estimator", "hand_design_verdict", "parse_band", "rank_rows",
    "DEFAULT_OBJECTIVES", "EvalContext", "Evaluator", "FIDELITIES", "Fidelity", "FinalistsResult", "FlopsFidelity",
    "OBJECTIVES", "Objective", "ParetoPlotData", "PlotPoint", "Progress", "ProgressUpdate",
    "ProxyTrainFidelity", "ReferencePoint", "SAMPLERS", "SearchConfig", "SearchSummary", "StudyStorage",
    "ZeroCostFidelity", "check_image_size", "constraint_values", "dominates", "draw_pareto", "export_trial", "get_fidelity",
    "hypervolume_2d", "load_study_config", "open_results_study", "make_sampler", "open_storage", "open_study", "pareto_front",
    "pareto_plot_data", "pareto_rows", "parse_objectives", "population_size", "progress_update",
    "records", "register_fidelity", "run_search", "run_worker", "spread_indices", "train_finalists",
    "write_results", "write_study_results",
]
