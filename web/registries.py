"""/api/v1/registries: credentials for private registries (`orchestry registry login SERVER`).

Pull jobs use them for images of that server (`workflows/registry.py` finds an image's registry the way Docker
does). The password is sealed with the installation's key at once and never returned; the list shows servers
and usernames only. Every operation, reads included, needs the operator role, as for secrets.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestry.models.events import record
from orchestry.models.registries import RegistryCredential, delete_registry, put_registry, registries
from orchestry.probe.registry import LoginCheck, check_login
from orchestry.web.context import actor, ctx, json_body, operator_only, query, secret_box, session, stored
from orchestry.web.errors import ApiError, field, not_found
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import ErrorOut, Query, QueryBool
from orchestry.workflows.registry import (
    MAX_PASSWORD,
    MAX_USERNAME,
    PASSWORD_PATTERN,
    USERNAME_PATTERN,
    InvalidServer,
    check_password,
    check_server,
    check_username,
)

bp = Blueprint("registries", __name__, url_prefix="/api/v1/registries")
SERVER = "<registry:server>"


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # The patterns document in the schema what the validators check (with messages naming the rule).
    username: str = Field(
        max_length=MAX_USERNAME,
        description="the registry account",
        json_schema_extra={"minLength": 1, "pattern": USERNAME_PATTERN},
    )
    password: str = Field(
        max_length=MAX_PASSWORD,
        description="its password or token (never returned)",
        json_schema_extra={"minLength": 1, "pattern": PASSWORD_PATTERN},
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        why = check_username(value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        why = check_password(value)
        if why:
            raise ValueError(why)
        return value


class LoginQuery(Query):
    check: QueryBool = Field(
        True,
        description="ask the registry first whether it takes the credentials (as `docker login` does); false: "
        "store them unchecked (a registry only the Docker engine can reach)",
    )


class RegistryOut(BaseModel):
    server: str
    username: str
    created_at: datetime
    updated_at: datetime
    updated_by: str


class RegistryList(BaseModel):
    registries: list[RegistryOut]


def _out(row: RegistryCredential) -> RegistryOut:
    return RegistryOut(
        server=row.server,
        username=row.username,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _refusal(server: str, check: LoginCheck) -> ApiError | None:
    """The 422 for credentials the registry refused, or a registry that could not say; None when it took them
    (or asks for none)."""
    unchecked = "or store them unchecked with check=false (the CLI's --no-check)"
    if check.outcome == "refused":
        message = f"{server} refused these credentials ({check.detail} at {check.url}): wrong username or password"
        return ApiError(422, "login_refused", f"password: {message}", [field("password", message)])
    if check.outcome == "unreachable":
        message = f"no registry answered ({check.detail}); check the name, {unchecked}"
        return ApiError(422, "registry_unreachable", f"server: {message}", [field("server", message)])
    if check.outcome == "unexpected":
        message = f"{check.url} answered {check.detail}: not a Docker registry's API; {unchecked}"
        return ApiError(422, "registry_unexpected", f"server: {message}", [field("server", message)])
    return None


def _checked(server: str) -> str:
    try:
        return check_server(server)
    except InvalidServer as exc:
        raise ApiError(422, "invalid", f"server: {exc}", [field("server", str(exc))]) from None


@bp.get("")
@operation(
    "Registries logged in to: servers and usernames (never passwords)",
    tag="registries",
    responses={200: RegistryList, 403: ErrorOut},
)
def list_registries() -> Response:
    operator_only("registry credentials")
    return jsonify(RegistryList(registries=[_out(r) for r in registries(session())]).model_dump(mode="json"))


@bp.put(f"/{SERVER}")
@operation(
    "Log in to a registry: check its credentials with it, then store them (new: 201 with Location; replaced: "
    "200). Pulls of its images use them from the next start on.",
    tag="registries",
    query=LoginQuery,
    description="Unless `check=false`, the registry is asked first (GET /v2/ and its challenge, as `docker "
    "login` does): refused credentials are a 422 naming `password`, a registry that does not answer or is not "
    "one a 422 naming `server`; nothing is stored then.",
    body=Body(LoginBody),
    responses={200: RegistryOut, 201: RegistryOut, 403: ErrorOut, 415: ErrorOut, 422: ErrorOut, 503: ErrorOut},
)
def login(server: str) -> tuple[Response, int]:
    operator_only("registry credentials")
    server = _checked(server)
    args = query(LoginQuery)
    body = json_body(LoginBody, required=True)
    box = secret_box()  # a missing key is a 503 before anything is asked of the registry
    if args.check and ctx().settings.registry_check == "ask":
        # Before any write: the database is not held while the registry answers.
        refusal = _refusal(server, check_login(server, body.username, body.password))
        if refusal is not None:
            raise refusal
    sealed = box.seal(body.password)
    db = session()
    created = put_registry(db, server, body.username, sealed, actor())
    record(
        db,
        "registry.login",
        f"registry {server}: credentials of {body.username} {'stored' if created else 'replaced'}",
        actor=actor(),
        server=server,
        username=body.username,
    )
    db.commit()
    row = db.get(RegistryCredential, server)
    assert row is not None
    return stored(_out(row), f"/api/v1/registries/{server}", created)


@bp.delete(f"/{SERVER}")
@operation(
    "Log out of a registry: forget its credentials (running replicas keep running)",
    tag="registries",
    responses={204: "", 403: ErrorOut, 404: ErrorOut, 422: ErrorOut},
)
def logout(server: str) -> tuple[str, int]:
    operator_only("registry credentials")
    server = _checked(server)
    db = session()
    if not delete_registry(db, server):
        raise not_found("registry", server)
    record(db, "registry.logout", f"registry {server}: credentials removed", actor=actor(), server=server)
    db.commit()
    return "", 204
