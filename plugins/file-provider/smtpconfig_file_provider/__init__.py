"""smtpconfig secret provider ``file``: reads mounted secret files (Kubernetes and Docker secrets).

Installed as its own distribution; smtpconfig finds it through the entry point ``file`` in group
``smtpconfig``, which names this module.
"""

from __future__ import annotations

from smtpconfig.plugin import Register, hookimpl
from smtpconfig_file_provider.provider import FileProvider

__all__ = ["FileProvider", "register_secret_providers"]


@hookimpl
def register_secret_providers(register: Register) -> None:
    register(FileProvider)
