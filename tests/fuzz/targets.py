"""The fuzz targets: attacker bytes into each sans-I/O core, one target per decoder or handshake stage.

A target is ``def name(data: bytes) -> bool``. It lets through only the errors its module documents
(``NoiseError``, ``MultistreamError``, ``EnvelopeError``…) and checks what must hold on the way
(round trips, size bounds, no forged plaintext). Any other exception — ``IndexError``, ``KeyError``,
``struct.error``, ``UnicodeDecodeError``, ``RecursionError``, a bare ``ValueError``, a failed
``assert`` — is a finding. The return value says whether the core accepted the input as a whole,
valid exchange; the seed check uses it to prove the seeds are real inputs, the fuzzers ignore it.

Many targets read option bits from the first byte: which side or mode to run, and how to cut the
rest into reads (so the cores' buffering across partial reads is fuzzed too). Where a stage needs
valid state first (Noise message 2 needs a real message 1), that state is built from fixed keys,
so every input replays the same way. Structure-aware modes (a correctly encrypted Noise payload,
a correctly signed KLP envelope) let the fuzzer past the cryptography to the parsing behind it.

Every new decoder or protocol stage gets a target, with seeds (``python -m tests.fuzz.run
--write-seeds`` writes them to ``tests/fuzz/corpus/<target>/``). Targets live by layer in
``tests/fuzz/layers/`` (codec, wire, noise, klp, identity), register themselves with
:func:`fuzz_target` (``tests/fuzz/registry.py``) and share the input helpers and fixed identities of
``tests/fuzz/inputs.py``. This module is the one the runner and the tests import: it imports every
layer, in the order the targets are listed and run. A new layer's module is imported here.
"""

from __future__ import annotations

from tests.fuzz.registry import TARGETS, FuzzFunction, FuzzTarget, SeedFunction, fuzz_target

__all__ = ["TARGETS", "FuzzFunction", "FuzzTarget", "SeedFunction", "fuzz_target"]

# Importing a layer registers its targets, in this order.
from tests.fuzz.layers import codec, wire, connection, noise, klp, identity  # noqa: F401, I001
