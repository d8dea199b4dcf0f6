"""``y7nas run``: supernet → search → finalists → family → report, each stage resumable."""
from nas.pipeline._baseline import study_baseline
from nas.pipeline._chosen import chosen_paths
from nas.pipeline._stages import (DEFAULT_FAMILY_TARGETS, STAGES, RunConfig, RunHooks, best_finalist,
                                  family_targets, prepare_search, run_pipeline, search_config,
                                  search_space)
from nas.pipeline._state import RunError, RunState

__all__ = ["DEFAULT_FAMILY_TARGETS", "STAGES", "RunConfig", "RunError", "RunHooks", "RunState",
           "best_finalist", "chosen_paths", "family_targets", "prepare_search", "run_pipeline", "search_config",
           "search_space", "study_baseline"]
