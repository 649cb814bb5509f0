"""`cert-issue`: obtain or renew one `tls: auto` host's certificate over ACME HTTP-01 (certbot's `acme`).

Enqueued by the leader's cert-sweep (controller/acme.py). It re-reads the certificate row and does nothing
when it is no longer due (idempotent); else: the account (its key sealed in `acme_accounts`, one per
directory URL), an order for the host, the HTTP-01 answer stored in `acme_challenges` (every node's nginx
serves it on the proxy port within a second, controller/edge.py), the challenge answered, the order finalised
with a fresh key, the chain and the sealed key stored, the challenge removed. Events: cert.issued,
cert.renewed, cert.failed (with the CA's reason).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, cast

import httpx
from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWK, JWKRSA

from orchestry.config.secretbox import SecretBox, SecretKeyError, load_box
from orchestry.jobs.base import JobContext, PermanentError, TemporaryError
from orchestry.models.base import utcnow
from orchestry.models.edge import (
    AcmeAccount,
    AcmeChallenge,
    bump_edge,
    certificate,
    drop_challenge,
    store_certificate,
)
from orchestry.models.events import record
from orchestry.nginx.pem import inspect_pem
from orchestry.workflows.certs import cert_due, with_failure

ORDER_TIMEOUT = 90.0


def _box(ctx: JobContext) -> SecretBox:
    try:
        return load_box(ctx.settings)
    except SecretKeyError as exc:
        raise PermanentError(f"certificates need the secret key: {exc}") from None


def _network(ctx: JobContext, key: JWK, account: messages.RegistrationResource | None) -> client.ClientNetwork:
    verify: Any = ctx.settings.acme_ca_file or True
    return client.ClientNetwork(key, account=account, user_agent="orchestry", verify_ssl=cast(bool, verify))


def _account(ctx: JobContext, box: SecretBox) -> client.ClientV2:
    directory_url = str(ctx.settings.acme_directory_url)
    with ctx.sessions() as session:
        row = session.get(AcmeAccount, directory_url)
        stored = (box.open(row.key_ciphertext), row.uri) if row is not None else None
    if stored is not None:
        key = JWKRSA(key=serialization.load_pem_private_key(stored[0].encode(), password=None))
        regr = messages.RegistrationResource(body=messages.Registration(), uri=stored[1])
        net = _network(ctx, key, regr)
        return client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = JWKRSA(key=private)
    net = _network(ctx, key, None)
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)
    email = str(ctx.settings.acme_email or "")
    new = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    regr = acme.new_account(new)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with ctx.sessions.begin() as session:
        session.merge(AcmeAccount(directory=directory_url, key_ciphertext=box.seal(pem), uri=regr.uri))
    ctx.step("account", uri=regr.uri)
    return acme


def _wait_served(ctx: JobContext, host: str, token: str, answer: str) -> None:
    """Until this node's nginx answers the challenge (the route mirror pushes it within about 0.25 s)."""
    port = ctx.settings.proxy_port
    url = f"http://127.0.0.1:{port}/.well-known/acme-challenge/{token}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, headers={"Host": host}, timeout=2, trust_env=False)
            if response.status_code == 200 and response.text == answer:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TemporaryError(f"nginx did not serve the HTTP-01 answer for {host} within 10 s")


def cert_issue(ctx: JobContext) -> dict[str, Any]:
    host = str(ctx.args["host"])
    with ctx.sessions() as session:
        row = certificate(session, host)
        if row is not None and row.state == "valid" and not cert_due("valid", row.not_after, None, utcnow(), 0):
            return {"host": host, "skipped": "valid until " + str(row.not_after)}
        renewal = row is not None and row.cert_pem is not None
    box = _box(ctx)
    token = None
    try:
        acme = _account(ctx, box)
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        order = acme.new_order(acme_crypto.make_csr(key_pem, [host]))
        ctx.step("order", host=host, uri=order.uri)
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                # the CA still holds a valid authorization of this account for the host (RFC 8555 7.1.4;
                # Let's Encrypt keeps them 30 days): nothing to answer, and answering again is refused
                ctx.step("authorization reused", host=host)
                continue
            for challb in authz.body.challenges:
                if not isinstance(challb.chall, challenges.HTTP01):
                    continue
                response, validation = challb.response_and_validation(acme.net.key)
                token = challb.chall.encode("token")
                with ctx.sessions.begin() as session:
                    session.merge(AcmeChallenge(token=token, key_authorization=validation, host=host))
                    bump_edge(session)
                _wait_served(ctx, host, token, validation)
                acme.answer_challenge(challb, response)
                ctx.step("challenge", host=host, token=token)
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_TIMEOUT)
        order = acme.poll_and_finalize(order, deadline=deadline)
    except (errors.ValidationError, errors.IssuanceError, messages.Error) as exc:
        _failed(ctx, host, _reason(exc))
        raise PermanentError(f"ACME refused {host}: {_reason(exc)}") from None
    except (errors.Error, OSError, ValueError) as exc:
        raise TemporaryError(f"ACME for {host}: {type(exc).__name__}: {exc}") from None
    finally:
        if token is not None:
            with ctx.sessions.begin() as session:
                drop_challenge(session, token)
                bump_edge(session)
    info = inspect_pem(order.fullchain_pem, key_pem.decode())
    with ctx.sessions.begin() as session:
        store_certificate(session, host, "acme", info, box.seal(key_pem.decode()))
        kind = "cert.renewed" if renewal else "cert.issued"
        record(
            session,
            kind,
            f"certificate for {host} {kind.split('.')[1]}: until {info.not_after:%Y-%m-%d %H:%M}Z",
            actor=f"job:{ctx.job_id}",
            cert=host,
            issuer=info.issuer,
        )
    return {"host": host, "not_after": info.not_after.isoformat(), "issuer": info.issuer, "renewal": renewal}


def _reason(exc: Exception) -> str:
    if isinstance(exc, errors.ValidationError):
        problems = [str(c.error) for a in exc.failed_authzrs for c in a.body.challenges if c.error is not None]
        return "; ".join(problems) or str(exc)
    return str(exc)


def _failed(ctx: JobContext, host: str, reason: str) -> None:
    with ctx.sessions.begin() as session:
        row = certificate(session, host)
        if row is not None:
            if row.cert_pem is None:
                row.state = "failed"
            # Failures in a row: a first issuance's, or a renewal's (a success clears last_error).
            row.last_error = with_failure(row.last_error, reason, row.state == "failed" or row.cert_pem is not None)
            row.updated_at = utcnow()
        record(
            session,
            "cert.failed",
            f"certificate for {host} failed: {reason[:500]}",
            actor=f"job:{ctx.job_id}",
            cert=host,
        )
