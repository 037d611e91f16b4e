"""pydantic 1.10 (A1111 1.10.1) and 2.x (Forge) behind one small surface."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

PYDANTIC_V2 = pydantic.VERSION.startswith("2")

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """A model for files people edit by hand: unknown keys are errors, assignments are validated."""

    if PYDANTIC_V2:
        model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True)  # type: ignore[attr-defined]
    else:  # pragma: no cover - exercised by the pydantic 1 test run

        class Config:
            extra = "forbid"
            validate_assignment = True


def validate(model: type[Model], data: Any) -> Model:
    if PYDANTIC_V2:
        return model.model_validate(data)  # type: ignore[attr-defined,no-any-return]
    return model.parse_obj(data)  # type: ignore[no-any-return]  # pragma: no cover


def dump(instance: BaseModel) -> dict[str, Any]:
    """Plain Python values (secrets stay SecretStr objects; callers decide how to show them)."""
    if PYDANTIC_V2:
        return instance.model_dump()  # type: ignore[attr-defined,no-any-return]
    return instance.dict()  # pragma: no cover


def copy_with(instance: Model, **changes: Any) -> Model:
    """A validated copy with some fields changed."""
    data = dump(instance)
    data.update(changes)
    return validate(type(instance), data)


def error_locations(exc: pydantic.ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) for each problem, the same on pydantic 1 and 2."""
    return [(tuple(error.get("loc", ())), str(error.get("msg", "invalid"))) for error in exc.errors()]
