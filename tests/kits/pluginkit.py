"""Plugin distributions as their authors ship them: a fake one installed into a site directory the
way pip leaves it, and the plugin guide's own example, written out file by file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tests.kits.support import ROOT

GUIDE = ROOT / "docs" / "plugins.md"


def install_fake(site: Path, entry: str, module: str, source: str) -> None:
    """A distribution in `site` as pip would leave it: module, METADATA and entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[smtpconfig]\n{entry} = {module}\n")


def guide_files() -> dict[str, str]:
    """The guide's example, by path: each block the guide heads with a visible file name."""
    blocks = re.findall(r"\*\*File `(\S+)`:\*\*\n\n```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    return dict(blocks)


def write_guide_files(where: Path) -> None:
    for name, body in guide_files().items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
