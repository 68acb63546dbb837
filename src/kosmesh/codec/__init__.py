"""Byte codecs below every layer: unsigned varints, a bounded protobuf subset, base58btc, and the
one reader of uvarint-length-prefixed frames that multistream, identify and KLP share.

Nothing here imports from the rest of kosmesh; identity, wire and KLP all build on it.
"""
