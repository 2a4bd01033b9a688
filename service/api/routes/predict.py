"""``POST /v1/predict``: per-task predictions for a batch, from the resident factor set."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.deps import RuntimeDep
from service.api.routes import documented, json_body, read_tensor_json
from service.schemas import PredictRequest, PredictResponse
from service.serving.v1 import predict as predict_v1

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
    return Response(await predict_v1(runtime, body, array), media_type="application/json")


def _holds_inputs(body: PredictRequest) -> bool:
    return body.inputs == []
