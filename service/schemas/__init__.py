"""API schemas (pydantic), apart from the ORM models: what clients send (``*Create``, ``*Spec``) and receive
(``*Public``, lists as ``*sPublic(data, count)``). Unknown fields in requests are refused, so a typo in an option
is a 422 naming the field rather than a silently ignored setting.

One module per area (``base``: what they share; ``catalog``, ``jobs``, ``serving``); every schema is imported
from here.
"""

from __future__ import annotations

from service.schemas.base import (
    ErrorBody,
    Name,
)
from service.schemas.catalog import (
    AliasesPublic,
    AliasPublic,
    AliasSet,
    ArtifactPublic,
    DatasetInfo,
    DatasetPublic,
    DatasetSpec,
    DatasetsPublic,
    FactorPublic,
    FactorSetPublic,
    FactorSetsPublic,
    GcPublic,
    Lineage,
    RetiredPublic,
    TaskIn,
    TeacherInfo,
    TeacherPublic,
    TeacherSpec,
    TeachersPublic,
    WhoAmI,
    alias_public,
    factor_set_public,
)
from service.schemas.jobs import (
    FactorSetExtend,
    FactorSetImport,
    JobCreate,
    JobPublic,
    JobsPublic,
    RecipeOverrides,
    TasksRemove,
)
from service.schemas.serving import (
    AssemblyCreate,
    AssemblyOutput,
    AssemblyPublic,
    FactorSetBrief,
    FactorSetRef,
    PredictRequest,
    PredictResponse,
    SamplesPublic,
    TaskPrediction,
    TensorSpec,
)

__all__ = [
    "AliasPublic",
    "AliasSet",
    "AliasesPublic",
    "ArtifactPublic",
    "AssemblyCreate",
    "AssemblyOutput",
    "AssemblyPublic",
    "DatasetInfo",
    "DatasetPublic",
    "DatasetSpec",
    "DatasetsPublic",
    "ErrorBody",
    "FactorPublic",
    "FactorSetBrief",
    "FactorSetExtend",
    "FactorSetImport",
    "FactorSetPublic",
    "FactorSetRef",
    "FactorSetsPublic",
    "GcPublic",
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "Lineage",
    "Name",
    "PredictRequest",
    "PredictResponse",
    "RecipeOverrides",
    "RetiredPublic",
    "SamplesPublic",
    "TaskIn",
    "TaskPrediction",
    "TasksRemove",
    "TeacherInfo",
    "TeacherPublic",
    "TeacherSpec",
    "TeachersPublic",
    "TensorSpec",
    "WhoAmI",
    "alias_public",
    "factor_set_public",
]
