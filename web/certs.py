"""/api/v1/certs: TLS certificates, uploaded (`tls: custom`) or obtained over ACME (`tls: auto`).

A certificate covers the names of its leaf (subjectAltName); every node's nginx serves it by SNI within a
second of the upload (controller/edge.py), without a reload. The private key is sealed with the
installation's secret key and never returned; every operation needs the operator role.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from orchestry.models.base import utcnow
from orchestry.models.edge import Certificate, bump_edge, certificate, store_certificate
from orchestry.models.events import record
from orchestry.nginx.pem import MAX_PEM, PemError, inspect_pem, key_pem_of
from orchestry.spec.fields import normalize_host
from orchestry.web.context import actor, json_body, operator_only, secret_box, session, stored
from orchestry.web.errors import ApiError, field, not_found
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import ErrorOut

bp = Blueprint("certs", __name__, url_prefix="/api/v1/certs")
NAME = "<string(maxlength=253):name>"


class CertBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cert: str = Field(max_length=MAX_PEM, description="PEM certificates, the leaf first, then its chain")
    key: str = Field(max_length=MAX_PEM, description="the leaf's PEM private key (stored sealed, never returned)")
    name: str | None = Field(None, max_length=253, description="default: the first name the certificate covers")


class CertOut(BaseModel):
    name: str
    hosts: list[str]
    source: str = Field(description="custom | acme")
    state: str = Field(description="pending | valid | failed")
    issuer: str | None
    not_before: datetime | None
    not_after: datetime | None
    last_error: str | None
    updated_at: datetime


class CertList(BaseModel):
    certs: list[CertOut]


def _out(row: Certificate) -> CertOut:
    return CertOut(
        name=row.name,
        hosts=list(row.hosts),
        source=row.source,
        state=row.state,
        issuer=row.issuer,
        not_before=row.not_before,
        not_after=row.not_after,
        last_error=row.last_error,
        updated_at=row.updated_at,
    )


@bp.get("")
@operation("Certificates: names, issuer, expiry, state (never keys)", tag="certs", responses={200: CertList})
def list_certs() -> Response:
    operator_only("certificates")
    rows = session().scalars(select(Certificate).order_by(Certificate.name))
    return jsonify(CertList(certs=[_out(r) for r in rows]).model_dump(mode="json"))


@bp.get(f"/{NAME}")
@operation("One certificate (never its key)", tag="certs", responses={200: CertOut, 404: ErrorOut})
def show_cert(name: str) -> Response:
    operator_only("certificates")
    row = certificate(session(), name)
    if row is None:
        raise not_found("certificate", name)
    return jsonify(_out(row).model_dump(mode="json"))


@bp.post("")
@operation(
    "Upload a certificate and its key (`tls: custom`; also how wildcard certificates come in): 201 created, "
    "200 replaced (same name); served by every node within a second, without a reload",
    tag="certs",
    body=Body(CertBody),
    responses={200: CertOut, 201: CertOut, 403: ErrorOut, 415: ErrorOut, 422: ErrorOut, 503: ErrorOut},
)
def add_cert() -> tuple[Response, int]:
    operator_only("certificates")
    body = json_body(CertBody, required=True)
    try:
        info = inspect_pem(body.cert, body.key)
        name = normalize_host(body.name) if body.name else info.hosts[0]
    except PemError as exc:
        raise ApiError(422, "invalid_certificate", str(exc), [field(exc.field, exc.rule)]) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_certificate", f"name: {exc}", [field("name", str(exc))]) from None
    if info.not_after <= utcnow():
        raise ApiError(422, "invalid_certificate", "cert: has expired", [field("cert", "has expired")])
    sealed = secret_box().seal(key_pem_of(body.key))
    db = session()
    row, created = store_certificate(db, name, "custom", info, sealed)
    record(
        db,
        "cert.added",
        f"certificate {name} {'added' if created else 'replaced'}: {', '.join(info.hosts)} "
        f"until {info.not_after:%Y-%m-%d}",
        actor=actor(),
        cert=name,
    )
    db.commit()
    return stored(_out(row), f"/api/v1/certs/{name}", created)


@bp.delete(f"/{NAME}")
@operation(
    "Delete a certificate (nginx stops serving it within a second)", tag="certs", responses={204: "", 404: ErrorOut}
)
def remove_cert(name: str) -> tuple[str, int]:
    operator_only("certificates")
    db = session()
    row = certificate(db, name)
    if row is None:
        raise not_found("certificate", name)
    db.delete(row)
    bump_edge(db)
    record(db, "cert.deleted", f"certificate {name} deleted", actor=actor(), cert=name)
    db.commit()
    return "", 204
