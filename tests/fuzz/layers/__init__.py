"""The fuzz targets, one module per layer of the stack; ``tests/fuzz/targets.py`` imports them all."""
