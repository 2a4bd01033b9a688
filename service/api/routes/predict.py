"""``POST /v1/predict``: per-task predictions for a batch, from the (cached) assembly of the requested tasks."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.deps import RuntimeDep
from service.api.routes import documented, json_body, read_tensor_json
from service.schemas import PredictRequest, PredictResponse
from service.serving.v1 import decode_inputs, predictions_json

router = APIRouter(prefix="/v1", tags=["serving"])


@router.post(
    "/predict",
    response_class=Response,
    summary="Predict with any subset of a factor set's tasks",
    responses={200: {"model": PredictResponse, "description": "Predictions per task."}, **documented(404, 422, 500)},
    openapi_extra=json_body(PredictRequest),
)
async def predict(request: Request, runtime: RuntimeDep) -> Response:
    body, array = await read_tensor_json(request, PredictRequest, "inputs", _holds_inputs)
    x = array if array is not None else decode_inputs(body.inputs)
    entry, _ = await runtime.assembly(body.factor_set, body.tasks, combined=body.combined)
    x = runtime.check_batch(x, entry)
    outputs = await runtime.infer(entry, x)
    return Response(
        predictions_json(entry, outputs, logits=body.logits, runtime=runtime), media_type="application/json"
    )


def _holds_inputs(body: PredictRequest) -> bool:
    return body.inputs == []
