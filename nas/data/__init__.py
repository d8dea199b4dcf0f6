"""YOLO-format datasets (YOLOv5/v7 data YAML, images/ + labels/) and a synthetic default.

Typical use::

    cfg = load_data_config("synthetic")          # or a path to a data YAML
    train = scan_split(cfg, "train")             # validates; tells stderr what it dropped (report_scan)
    loader = make_loader(train, img=256, batch=16, augment=True, seed=0)
    for images, targets, metas in loader:        # (B,3,H,W), (T,6) batch_idx cls x1 y1 x2 y2
        ...
"""
from nas.data._augment import AugmentConfig, hflip, hsv_jitter, mosaic4
from nas.data._config import DataConfig, load_data_config, parse_data_config
from nas.data._dataset import (EpochSampler, ImageMeta, YoloDataset, collate, first_batch,
                               make_loader, subset_indices)
from nas.data._letterbox import (Letterbox, boxes_from_letterbox, boxes_to_letterbox,
                                 letterbox_image, letterbox_params, yolo_to_xyxy)
from nas.data._scan import (DROP_REASONS, IMG_FORMATS, ScanStats, ScanSummary, SplitIndex,
                            img2label_path, list_images, report_scan, scan_reporter, scan_split)
from nas.data._synthetic import SHAPES, generate_synthetic, synthetic_dataset

__all__ = [
    "AugmentConfig", "DROP_REASONS", "DataConfig", "EpochSampler", "IMG_FORMATS", "ImageMeta",
    "Letterbox", "SHAPES", "ScanStats", "ScanSummary", "SplitIndex", "YoloDataset", "boxes_from_letterbox",
    "boxes_to_letterbox", "collate", "first_batch", "generate_synthetic", "hflip", "hsv_jitter",
    "img2label_path", "letterbox_image", "letterbox_params", "list_images", "load_data_config",
    "make_loader", "mosaic4", "parse_data_config", "report_scan", "scan_reporter", "scan_split",
    "subset_indices",
    "synthetic_dataset", "yolo_to_xyxy",
]
