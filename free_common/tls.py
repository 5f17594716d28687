"""Throwaway TLS material: a self-signed CA and server certificates signed by it.

Used by tests and local deployments (model hub, Flower SuperLink). Keys are ECDSA P-256;
certificates carry the SANs the clients check (IP addresses and DNS names).

Flower SuperNode authentication keys (:func:`make_supernode_keypair`) are EC P-384 key pairs
in OpenSSH format, what ``ssh-keygen -t ecdsa -b 384`` writes and what
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read.
:func:`write_deployment_material` lays out everything a loopback deployment needs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DeploymentMaterial",
    "TlsError",
    "make_ca",
    "make_server_cert",
    "make_supernode_keypair",
    "write_deployment_material",
]

_VALIDITY = dt.timedelta(days=365)


class TlsError(ValueError):
    """A host name, key or certificate given to this module is invalid."""


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed CA valid for a year: ``(key_pem, cert_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() for c in host):
            raise TlsError(f"invalid host name {host!r}") from None
        return x509.DNSName(host)


def make_server_cert(
    ca_key_pem: bytes, ca_cert_pem: bytes, hosts: list[str]
) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (IPs and DNS names) signed by the CA.

    Returns:
        ``(key_pem, cert_pem)``; the common name is the first host.

    Raises:
        TlsError: no hosts, an invalid host, or a CA key/cert that does not parse.
    """
    if not hosts:
        raise TlsError("a server certificate needs at least one host")
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as err:
        raise TlsError(f"cannot parse CA key or certificate: {err}") from err
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError("CA key must be an EC key made by make_ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def make_supernode_keypair() -> tuple[bytes, bytes]:
    """A SuperNode authentication key pair: ``(private_openssh, public_openssh)``.

    EC P-384 (a NIST curve, as Flower requires); the private key is an unencrypted OpenSSH
    block, the public key one ``ecdsa-sha2-nistp384 ...`` line.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b"\n"


@dataclass(frozen=True)
class DeploymentMaterial:
    """Paths written by :func:`write_deployment_material`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    supernode_keys: list[tuple[Path, Path]]


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def write_deployment_material(
    out_dir: Path, *, hosts: list[str], supernodes: int
) -> DeploymentMaterial:
    """Write a CA, a server certificate for ``hosts`` and ``supernodes`` SuperNode key pairs.

    Layout: ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` and ``supernode-<i>`` /
    ``supernode-<i>.pub``. Private keys are written with mode 0600.
    """
    if supernodes < 0:
        raise TlsError(f"supernodes must be >= 0, got {supernodes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca("free-fed deployment CA")
    key, cert = make_server_cert(ca_key, ca_cert, hosts)
    _write(out_dir / "ca.key", ca_key, True)
    _write(out_dir / "ca.crt", ca_cert, False)
    _write(out_dir / "server.key", key, True)
    _write(out_dir / "server.pem", cert, False)
    pairs = []
    for i in range(supernodes):
        private, public = make_supernode_keypair()
        priv_path, pub_path = out_dir / f"supernode-{i}", out_dir / f"supernode-{i}.pub"
        _write(priv_path, private, True)
        _write(pub_path, public, False)
        pairs.append((priv_path, pub_path))
    return DeploymentMaterial(
        out_dir / "ca.crt", out_dir / "server.pem", out_dir / "server.key", pairs
    )
