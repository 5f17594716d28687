import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from client.owner import FaultInjected, inject_fault
from free_common.tls import TlsError, make_supernode_keypair, write_deployment_material
from scripts.deploy.proctree import descendants, stop_pids


def test_supernode_keys_are_openssh_nist_p384() -> None:
    private, public = make_supernode_keypair()
    key = load_ssh_private_key(private, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.startswith(b"ecdsa-sha2-nistp384 ")
    assert load_ssh_public_key(public.strip()) is not None


def test_deployment_material_layout(tmp_path: Path) -> None:
    m = write_deployment_material(tmp_path, hosts=["127.0.0.1", "localhost"], supernodes=2)
    cert = x509.load_pem_x509_certificate(m.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert len(m.supernode_keys) == 2
    assert (m.server_key.stat().st_mode & 0o777) == 0o600
    assert all((p.stat().st_mode & 0o777) == 0o600 for p, _ in m.supernode_keys)
    with pytest.raises(TlsError):
        write_deployment_material(tmp_path / "x", hosts=[], supernodes=1)


def test_stop_pids_ends_the_whole_tree() -> None:
    code = "import subprocess,time; subprocess.Popen(['sleep','60']); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 20
    while not descendants(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = [parent.pid, *descendants(parent.pid)]
    assert len(tree) == 2
    stopped = stop_pids([parent.pid], timeout=5)
    parent.wait(timeout=5)
    assert set(tree) <= set(stopped)
    time.sleep(0.3)
    for pid in tree[1:]:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_fault_hook() -> None:
    inject_fault(0, "1=raise")
    inject_fault(None, "0=raise")
    with pytest.raises(FaultInjected):
        inject_fault(1, "0=sleep:0, 1=raise")
