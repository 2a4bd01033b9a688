"""The Open Inference Protocol (KServe v2) over gRPC, served beside the HTTP API by the same process.

``inference.proto`` is the protocol's ``GRPCInferenceService``; :mod:`.protocol` loads it at run time,
:mod:`.tensors` converts its tensors to and from numpy, and :mod:`.server` answers the calls with the HTTP API's
runtime (the same assembly cache, sessions and micro-batchers), API keys, errors and metrics registry.
"""
