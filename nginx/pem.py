"""A certificate and its key as uploaded (pure): parsed, checked against each other, and described; and a
self-signed one made (nginx's fallback certificate, a test's TLS server)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from orchestry.spec.fields import normalize_host

MAX_PEM = 65_536


@dataclass(frozen=True)
class PemInfo:
    hosts: tuple[str, ...]  # the leaf's DNS names (normalised), else its common name
    issuer: str
    not_before: datetime
    not_after: datetime
    cert_pem: str  # the chain as given, leaf first, re-encoded (no stray text)


class PemError(ValueError):
    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def inspect_pem(cert_pem: str, key_pem: str) -> PemInfo:
    """Raises PemError naming `cert` or `key` and the rule broken."""
    if len(cert_pem) > MAX_PEM or len(key_pem) > MAX_PEM:
        raise PemError("cert" if len(cert_pem) > MAX_PEM else "key", f"must be at most {MAX_PEM} characters")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise PemError("cert", "must be PEM certificates (-----BEGIN CERTIFICATE-----), the leaf first") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise PemError("key", "must be an unencrypted PEM private key") from None
    leaf = chain[0]
    public = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    mine = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != mine:
        raise PemError("key", "is not the key of the certificate (the first one in cert)")
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        raw = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        raw = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    hosts = []
    for name in raw:
        try:
            hosts.append(normalize_host(name))
        except ValueError:
            continue
    if not hosts:
        raise PemError("cert", "names no DNS host (subjectAltName or common name)")
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
    return PemInfo(
        tuple(dict.fromkeys(hosts)),
        leaf.issuer.rfc4514_string()[:512],
        leaf.not_valid_before_utc,
        leaf.not_valid_after_utc,
        pem,
    )


def _pkcs8(key: PrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def key_pem_of(key_pem: str) -> str:
    """The key re-encoded as PKCS#8 PEM (what nginx's parse_pem_priv_key reads)."""
    return _pkcs8(serialization.load_pem_private_key(key_pem.encode(), password=None))


def self_signed(common_name: str, days: int, names: Sequence[x509.GeneralName] = ()) -> tuple[str, str]:
    """(certificate PEM, PKCS#8 key PEM): a fresh P-256 key, valid from a day ago for `days` days, with
    `names` as its subjectAltName when given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode(), _pkcs8(key)
