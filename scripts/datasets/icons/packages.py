"""What the manifest records about each Debian package: version, .deb hash, licence file.

The .deb's SHA-256 comes from the APT package index (``apt-cache show PACKAGE=VERSION``),
which is the hash Debian's signed archive publishes for that exact file; the installed
package itself does not keep its .deb.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .themes import apt_install_command

DOC_ROOT = Path("/usr/share/doc")
_LICENSE = re.compile(r"^License:[ \t]*(\S.*)$", re.MULTILINE)


class ThemesMissingError(RuntimeError):
    """The packages the renderer needs are not installed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}\nInstall them with:\n  {apt_install_command()}")


@dataclass(frozen=True)
class PackageInfo:
    """One installed Debian package, as the manifest records it.

    Attributes:
        name: package name.
        version: installed version.
        deb_sha256: SHA-256 of that version's .deb in the APT index ("" if the index lacks it).
        copyright_file: path of its ``copyright`` file.
        copyright_sha256: SHA-256 of that file.
        licenses: the distinct ``License:`` names the copyright file lists, in order.
    """

    name: str
    version: str
    deb_sha256: str
    copyright_file: str
    copyright_sha256: str
    licenses: tuple[str, ...]

    def manifest_entry(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "deb_sha256": self.deb_sha256,
            "copyright_file": self.copyright_file,
            "copyright_sha256": self.copyright_sha256,
            "copyright_licenses": list(self.licenses),
        }


def _run(args: Sequence[str]) -> str:
    """Stdout of a Debian tool; :class:`ThemesMissingError` when the tool is missing."""
    if shutil.which(args[0]) is None:
        raise ThemesMissingError(f"{args[0]} not found: the renderer needs a Debian system")
    return subprocess.run(list(args), capture_output=True, text=True, check=False).stdout


def installed_versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed version of each of ``packages``.

    Raises:
        ThemesMissingError: if any is not installed.
    """
    out = _run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n",
                *packages])  # fmt: skip
    versions = {}
    for line in out.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status.startswith("ii"):
            versions[name] = version
    missing = [p for p in packages if p not in versions]
    if missing:
        raise ThemesMissingError(f"{len(missing)} packages not installed: {' '.join(missing)}")
    return versions


def parse_index_sha256(record: str, version: str) -> str:
    """The ``SHA256`` of the stanza for ``version`` in ``apt-cache show`` output ("" if none)."""
    for stanza in record.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Version") == version and "SHA256" in fields:
            return fields["SHA256"].strip()
    return ""


def license_names(copyright_text: str) -> tuple[str, ...]:
    """The distinct ``License:`` field values of a Debian copyright file, in order."""
    seen: dict[str, None] = {}
    for match in _LICENSE.finditer(copyright_text):
        seen.setdefault(match.group(1).strip(), None)
    return tuple(seen)


def package_info(name: str, version: str, doc_root: Path = DOC_ROOT) -> PackageInfo:
    """Version, .deb hash and licence file of an installed package."""
    deb_sha256 = parse_index_sha256(_run(["apt-cache", "show", f"{name}={version}"]), version)
    copyright_path = doc_root / name / "copyright"
    try:
        text = copyright_path.read_bytes()
    except OSError:
        text = b""
    return PackageInfo(
        name=name,
        version=version,
        deb_sha256=deb_sha256,
        copyright_file=str(copyright_path) if text else "",
        copyright_sha256=hashlib.sha256(text).hexdigest() if text else "",
        licenses=license_names(text.decode("utf-8", errors="replace")),
    )
