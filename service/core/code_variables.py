"""Environment variable names that decide which code a program loads or runs, rather than what it
does. No configuration makes them settable for a command an API-made instance runs."""

from __future__ import annotations

# The dynamic loader's (glibc ignores most of them in setuid programs for this reason), the shells'
# start-up hooks, and the interpreters' search paths and option variables. PATH is here because a
# script the command runs finds its programs with it; the operator sets it for the server, which
# the command inherits.
_CODE_PREFIXES = (
    "LD_", "DYLD_", "GCONV_", "MALLOC_", "GLIBC_", "BASH_FUNC_", "PYTHON", "PERL", "RUBY", "NODE_",
    "LUA_", "JAVA_", "_JAVA_", "JDK_JAVA_", "GEM_", "PHP", "OPENSSL_",
)
_CODE_NAMES = frozenset({
    "PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH",
    "GLOBIGNORE", "HOSTALIASES", "LOCPATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS",
    "LOCALDOMAIN", "TZDIR", "GETCONF_DIR", "NIS_PATH", "TMPDIR", "CLASSPATH", "RUBYOPT", "HOME",
})


def controls_code(name: str) -> bool:
    """Upper-cased: a program may read its variables case-blind, so a variant is refused too."""
    upper = name.upper()
    return upper in _CODE_NAMES or upper.startswith(_CODE_PREFIXES)
