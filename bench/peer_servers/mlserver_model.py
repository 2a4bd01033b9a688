"""MLServer's way: a custom runtime (``MLModel``) speaking the Open Inference Protocol, with MLServer's adaptive
batching (``max_batch_size``/``max_batch_time`` in model-settings.json). ``mlserver start <dir>``."""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from ortconf import OUTPUTS, make_session


class GraphModel(MLModel):
    async def load(self) -> bool:
        self.session = make_session()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        outputs = self.session.run(OUTPUTS, {"x": x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name=n, payload=o) for n, o in zip(OUTPUTS, outputs, strict=True)],
        )
