"""Write TLS and SuperNode-authentication material for a Flower deployment.

Usage::

    python -m scripts.deploy.make_certs OUT_DIR --hosts 127.0.0.1 localhost --supernodes 3

Writes ``ca.crt``/``ca.key`` (a fresh CA), ``server.pem``/``server.key`` (SuperLink
certificate with the given hosts as SANs) and ``supernode-<i>``/``supernode-<i>.pub``
(EC P-384 OpenSSH key pairs for ``--auth-supernode-private-key`` and
``flwr supernode register``). Private keys are mode 0600.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from free_common.tls import write_deployment_material


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--hosts", nargs="+", default=["127.0.0.1", "localhost"])
    parser.add_argument("--supernodes", type=int, default=3)
    args = parser.parse_args(argv)
    material = write_deployment_material(args.out_dir, hosts=args.hosts, supernodes=args.supernodes)
    print(f"CA certificate:     {material.ca_cert}")
    print(f"server certificate: {material.server_cert} (SAN: {', '.join(args.hosts)})")
    for private, public in material.supernode_keys:
        print(f"SuperNode key:      {private} (+ {public.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
