"""Every public-key file the project writes is accepted, as written, by the edge commands.

Formats: the server's ``server-ed25519.pub.hex`` (hex digits and a newline, written by
``server.federation.server_signing_key``), the 32 raw bytes ``signing.generate_keypair``
returns, and PEM (SubjectPublicKeyInfo).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.edge import cli
from client.edge.verify import VerificationError, load_public_key_file
from free_common import signing
from free_common.export.manifest import write_bundle
from server.federation import server_signing_key
from tests.edge_bundles import signed_bundle


def _server_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    """The server's fresh export key and the public-key file it wrote beside the export."""
    key = server_signing_key("", tmp_path / "exports")
    return key, tmp_path / "exports" / "server-ed25519.pub.hex"


def _written_formats(key: Ed25519PrivateKey, hex_file: Path) -> dict[str, Path]:
    public = key.public_key()
    folder = hex_file.parent
    raw = folder / "server.pub.raw"
    raw.write_bytes(signing.public_raw(public))
    pem = folder / "server.pub.pem"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    bare_hex = folder / "server.pub.bare-hex"
    bare_hex.write_text(signing.public_raw(public).hex().upper())
    return {"server-pub-hex": hex_file, "raw": raw, "pem": pem, "hex-no-newline": bare_hex}


FORMATS = ["server-pub-hex", "raw", "pem", "hex-no-newline"]


def test_server_writes_hex_with_a_trailing_newline(tmp_path: Path) -> None:
    key, hex_file = _server_key(tmp_path)
    assert hex_file.read_text() == signing.public_raw(key.public_key()).hex() + "\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_edge_loader_accepts_format(tmp_path: Path, fmt: str) -> None:
    key, hex_file = _server_key(tmp_path)
    path = _written_formats(key, hex_file)[fmt]
    assert signing.key_id(load_public_key_file(path)) == signing.key_id(key.public_key())


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_verify_and_evaluate_accept_format(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key, hex_file = _server_key(tmp_path)
    path = _written_formats(key, hex_file)[fmt]
    bundle = write_bundle(signed_bundle(key), tmp_path / "bundle")
    common = ["--bundle", str(bundle), "--public-key", str(path)]
    assert cli.main(["verify", *common]) == 0
    episodes = ["--ways", "5", "--shots", "1", "--queries", "2", "--episodes", "2"]
    assert cli.main(["evaluate", *common, *episodes]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK tiny/proto v1") and "accuracy" in out


def test_wrong_length_hex_is_refused_with_the_formats_named(tmp_path: Path) -> None:
    (tmp_path / "short.hex").write_text("ab" * 31 + "\n")
    with pytest.raises(VerificationError, match="32 raw bytes, 64 hex digits or PEM, got 63 bytes"):
        load_public_key_file(tmp_path / "short.hex")
