"""Serving: resident factor sets, micro-batching, execution providers, factor-set references, /v1 and v2 codecs."""
