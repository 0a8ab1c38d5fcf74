"""Throwaway PKI (CA + valid/expired/wrong-host server certs, a client cert) for TLS tests."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
)
WRONG_HOST_NAME = "wrong.example.invalid"


@dataclass(frozen=True)
class CertPair:
    """A server certificate and its key; `not_after` is exact to the second, as in the cert."""

    cert: Path
    key: Path
    not_after: dt.datetime


@dataclass(frozen=True)
class Pki:
    """CA certificate plus one server pair per TLS failure mode, and a client pair for mTLS."""

    ca_cert: Path
    valid: CertPair
    expired: CertPair
    wrong_host: CertPair
    client: CertPair
    chained: CertPair  # issued by an intermediate CA; its file holds the leaf and the intermediate
    intermediate_not_after: dt.datetime  # earlier than `chained.not_after`


def _now() -> dt.datetime:
    """Whole-second UTC time, so the stored not_after equals what a TLS peer reports."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write an unencrypted PKCS#8 key, owner-only: the nginx master reads it as root."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _ca_certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int,
) -> x509.Certificate:
    """A CA certificate for `key`: self-signed when `issuer` is None, else signed by it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        return builder.sign(key, hashes.SHA256())
    issuer_ski = issuer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
    )
    return builder.sign(issuer[1], hashes.SHA256())


def _make_ca(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    """Self-signed P-256 CA valid long enough to cover every leaf, including the expired one.

    Path length 1: it may sign one intermediate, which signs the `chained` leaf.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(
        "cfe test CA",
        key,
        issuer=None,
        not_before=now - dt.timedelta(days=60),
        not_after=now + dt.timedelta(days=365),
        path_length=1,
    )
    path = directory / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _make_intermediate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    not_after: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 intermediate CA signed by the root, expiring at `not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(
        "cfe test intermediate",
        key,
        issuer=(ca_cert, ca_key),
        not_before=now - dt.timedelta(days=1),
        not_after=not_after,
        path_length=0,
    )
    return cert, key


def _make_server(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    sans: tuple[x509.GeneralName, ...],
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> CertPair:
    """Issue a P-256 leaf (serverAuth unless `usage` says otherwise) signed by the CA, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return CertPair(cert=cert_path, key=key_path, not_after=not_after)


def make_pki(directory: Path) -> Pki:
    """Write the CA and the valid, expired and wrong-host server pairs as PEM into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = _now()
    day = dt.timedelta(days=1)
    ca_cert, ca_key, ca_path = _make_ca(directory, now)
    valid = _make_server(
        directory,
        "valid",
        ca_cert,
        ca_key,
        common_name="localhost",
        sans=LOCAL_SANS,
        not_before=now - day,
        not_after=now + 90 * day,
    )
    expired = _make_server(
        directory,
        "expired",
        ca_cert,
        ca_key,
        common_name="localhost",
        sans=LOCAL_SANS,
        not_before=now - 30 * day,
        not_after=now - day,
    )
    wrong_host = _make_server(
        directory,
        "wrong_host",
        ca_cert,
        ca_key,
        common_name=WRONG_HOST_NAME,
        sans=(x509.DNSName(WRONG_HOST_NAME),),
        not_before=now - day,
        not_after=now + 90 * day,
    )
    client = _make_server(
        directory,
        "client",
        ca_cert,
        ca_key,
        common_name="prometheus",
        sans=(x509.DNSName("prometheus.test"),),
        not_before=now - day,
        not_after=now + 90 * day,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    intermediate_not_after = now + 20 * day
    intermediate, intermediate_key = _make_intermediate(
        ca_cert, ca_key, now, intermediate_not_after
    )
    chained = _make_server(
        directory,
        "chained",
        intermediate,
        intermediate_key,
        common_name="localhost",
        sans=LOCAL_SANS,
        not_before=now - day,
        not_after=now + 90 * day,
    )
    with chained.cert.open("ab") as chain_file:  # leaf first, then the intermediate
        chain_file.write(intermediate.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_cert=ca_path,
        valid=valid,
        expired=expired,
        wrong_host=wrong_host,
        client=client,
        chained=chained,
        intermediate_not_after=intermediate_not_after,
    )
