"""Typed response bodies (pydantic), so the OpenAPI document at ``/docs`` says what is sent."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["PoseModel", "FaceModel", "AlignResponse", "LiveResponse", "ModelEntry", "ModelsResponse",
           "Health", "ErrorBody", "ErrorResponse"]


class PoseModel(BaseModel):
    yaw: float = Field(description="degrees")
    pitch: float = Field(description="degrees")
    roll: float = Field(description="degrees")


class FaceModel(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2, image pixels")
    score: float = Field(description="detector score in [0, 1]; 1 for user boxes")
    roi_box: list[float] = Field(description="square crop region resized to 120x120, image pixels")
    param: list[float] = Field(description="62 3DMM parameters: 12 pose [sR|t], 40 shape, 10 expression")
    landmarks: list[list[float]] = Field(description="68 x [x, y, z], image pixels")
    pose: PoseModel
    track_id: int | None = Field(None, description="identity across live frames (live mode only)")
    vertices: list[list[float]] | None = Field(
        None, description="38,365 x [x, y, z] dense mesh, image pixels (only with dense=true)")


class AlignResponse(BaseModel):
    """The same JSON as ``tddfa align`` writes (``image`` is always null: uploads have no path)."""

    image: str | None = None
    width: int
    height: int
    model: dict[str, Any]
    faces: list[FaceModel]


class LiveResponse(BaseModel):
    session: str
    timestamp_ms: float
    width: int
    height: int
    faces: list[FaceModel]


class ModelEntry(BaseModel):
    name: str
    arch: str
    width: float
    description: str
    loaded: bool


class ModelsResponse(BaseModel):
    loaded: dict[str, Any] = Field(description="the model serving requests (as in align's 'model')")
    models: list[ModelEntry]
    render_kinds: list[str]
    export_formats: list[str]


class Health(BaseModel):
    status: str
    version: str
    busy: int = Field(description="requests running or waiting")
    capacity: int = Field(description="workers + queue slots")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
