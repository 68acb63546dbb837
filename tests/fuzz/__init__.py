"""Fuzz targets for every byte-level decoder and handshake stage.

Hypothesis runs them briefly in ``make test``; atheris runs them longer in ``make fuzz``.
"""
