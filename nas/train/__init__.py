"""Training of YOLOv7-family detectors with the SimOTA loss, and the search's proxy training.

Typical use::

    result = train("yolov7-tiny", "synthetic", TrainConfig(epochs=30, img=256), run_dir="runs/x")
    print(result.map50_95)
    score = proxy_train(genome, "synthetic", epochs=5, img=160, subset=256).map50_95
"""
from nas.train._loop import (DEFAULT_LR, RESULTS_FIELDS, EpochStats, TrainConfig, TrainResult,
                             load_splits, prepare_model, train, unique_run_dir, with_nc)
from nas.train._optim import ModelEMA, Schedule, build_optimizer, param_groups
from nas.train._proxy import PROXY_RECIPE, ProxyResult, proxy_train

__all__ = [
    "DEFAULT_LR", "EpochStats", "ModelEMA", "PROXY_RECIPE", "ProxyResult", "RESULTS_FIELDS", "Schedule",
    "TrainConfig", "TrainResult", "build_optimizer", "load_splits", "param_groups",
    "prepare_model", "proxy_train", "train", "unique_run_dir", "with_nc",
]
