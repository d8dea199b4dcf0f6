"""y7nas core: genomes, yolov7-format YAML, model building, fusion and profiling."""
