"""/api/v1/secrets: set, list and delete secrets. Values go in and never come out.

A spec refers to a secret by name (`valueFrom: {secret: NAME}`); the value is encrypted at rest with the
installation's key (config/secretbox.py) and decrypted only when a replica starts. Every operation, reads
included, needs the operator role: a viewer does not even learn which secrets exist.
"""

from __future__ import annotations

import re
from datetime import datetime

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from orchestry.models.events import record
from orchestry.models.secrets import Secret, delete_secret, put_secret, secret_names
from orchestry.spec.fields import SECRET_NAME
from orchestry.web.context import actor, json_body, operator_only, secret_box, session, stored
from orchestry.web.errors import ApiError, not_found
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import ErrorOut

bp = Blueprint("secrets", __name__, url_prefix="/api/v1/secrets")
NAME = "<secret:name>"
MAX_VALUE = 65_536


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    value: str = Field(max_length=MAX_VALUE, description="the secret's value (never returned)")


class SecretOut(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime
    updated_by: str


class SecretList(BaseModel):
    secrets: list[SecretOut]


def _out(row: Secret) -> SecretOut:
    return SecretOut(name=row.name, created_at=row.created_at, updated_at=row.updated_at, updated_by=row.updated_by)


def _checked(name: str) -> str:
    if not re.fullmatch(SECRET_NAME, name):
        raise ApiError(
            422,
            "invalid",
            "name: must be lowercase letters, digits and '-_.', starting and ending with a letter or digit",
            [{"field": "name", "rule": "secret name", "message": "name: not a valid secret name"}],
        )
    return name


@bp.get("")
@operation("Secret names (never values)", tag="secrets", responses={200: SecretList, 403: ErrorOut})
def list_secrets() -> Response:
    operator_only("secrets")
    return jsonify(SecretList(secrets=[_out(r) for r in secret_names(session())]).model_dump(mode="json"))


@bp.get(f"/{NAME}")
@operation(
    "One secret's name and dates (never its value)",
    tag="secrets",
    responses={200: SecretOut, 404: ErrorOut, 422: ErrorOut},
)
def show_secret(name: str) -> Response:
    operator_only("secrets")
    row = session().get(Secret, _checked(name))
    if row is None:
        raise not_found("secret", name)
    return jsonify(_out(row).model_dump(mode="json"))


@bp.put(f"/{NAME}")
@operation(
    "Set a secret (created: 201 with Location; replaced: 200). Replicas read it when they next start.",
    tag="secrets",
    body=Body(SecretBody),
    responses={200: SecretOut, 201: SecretOut, 403: ErrorOut, 415: ErrorOut, 422: ErrorOut, 503: ErrorOut},
)
def set_secret(name: str) -> tuple[Response, int]:
    operator_only("secrets")
    _checked(name)
    body = json_body(SecretBody, required=True)
    sealed = secret_box().seal(body.value)
    db = session()
    created = put_secret(db, name, sealed, actor())
    record(db, "secret.set", f"secret {name} {'created' if created else 'replaced'}", actor=actor(), secret=name)
    db.commit()
    row = db.get(Secret, name)
    assert row is not None
    return stored(_out(row), f"/api/v1/secrets/{name}", created)


@bp.delete(f"/{NAME}")
@operation(
    "Delete a secret (running replicas keep the value they started with)",
    tag="secrets",
    responses={204: "", 404: ErrorOut, 422: ErrorOut},
)
def remove_secret(name: str) -> tuple[str, int]:
    operator_only("secrets")
    db = session()
    if not delete_secret(db, _checked(name)):
        raise not_found("secret", name)
    record(db, "secret.deleted", f"secret {name} deleted", actor=actor(), secret=name)
    db.commit()
    return "", 204
