"""The `file` provider (distribution smtpconfig-file-provider) against real files, symlinks and a
real unprivileged process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from smtpconfig.plugin import AccessDenied, BadParameters, Resolved, SecretNotFound
from smtpconfig.plugin.testing import prepare_initialization, prepare_parameters
from smtpconfig_file_provider import FileProvider, register_secret_providers

PLANTED = "PLANTED-file-secret-3e1d"
HOUR_NS = 3600 * 10**9


def shown(error: BaseException) -> str:
    """The error's text, repr, args and its formatted traceback with chained exceptions."""
    return "".join(traceback.TracebackException.from_exception(error).format()) + repr(error) + repr(error.args)


def resolve(directory: Path, file: str, provider: FileProvider | None = None, **init: Any) -> Resolved:
    """Resolve as the host does: parameters read by their kinds first."""
    provider = provider or FileProvider()
    params = prepare_parameters(FileProvider, {"File": file})
    return provider.resolve(params, prepare_initialization(FileProvider, {"Directory": str(directory), **init}))


def value(resolved: Resolved) -> str:
    return resolved.value.reveal()


def settle(path: Path, age_ns: int = HOUR_NS) -> None:
    """Give `path` an mtime in the past, so the provider may trust its cached identity."""
    then = time.time_ns() - age_ns
    os.utime(path, ns=(then, then), follow_symlinks=False)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    return directory


# --- registration ---------------------------------------------------------------------------------


def test_the_hook_registers_the_file_type() -> None:
    registered: list[type] = []
    register_secret_providers(registered.append)
    assert registered == [FileProvider] and FileProvider.name == "file"


def test_the_installed_distribution_declares_its_entry_point() -> None:
    (entry,) = [ep for ep in entry_points(group="smtpconfig") if ep.name == "file"]
    assert entry.value == "smtpconfig_file_provider"
    assert entry.dist is not None and entry.dist.name == "smtpconfig-file-provider"
    assert entry.load().register_secret_providers is register_secret_providers


@pytest.mark.parametrize(
    ("name", "instance_level", "required", "default"),
    [
        ("Directory", False, True, None),
        ("StripNewline", False, False, "true"),
        ("MaxBytes", False, False, "65536"),
        ("File", True, True, None),
    ],
)
def test_parameter_table(name: str, instance_level: bool, required: bool, default: str | None) -> None:
    parameter = {p.name: p for p in FileProvider.parameters}[name]
    assert (parameter.instance_level, parameter.required, parameter.data_type, parameter.default) == (
        instance_level, required, "string", default)
    assert parameter.description


# --- reading --------------------------------------------------------------------------------------


def test_reads_the_file_with_a_short_ttl(secrets: Path) -> None:
    (secrets / "smtp-password").write_text("hunter2\n")
    resolved = resolve(secrets, "smtp-password")
    assert value(resolved) == "hunter2"
    assert resolved.ttl is not None and 0 < resolved.ttl <= 10


@pytest.mark.parametrize(
    ("content", "strip", "expected", "reason"),
    [
        (b"a\n", "true", "a", "one trailing LF is removed"),
        (b"a\r\n", "true", "a", "one trailing CRLF is removed"),
        (b"a\n\n", "true", "a\n", "only one newline is removed"),
        (b"a\r\n\r\n", "true", "a\r\n", "only one CRLF is removed"),
        (b"a\r\n\n", "true", "a\r\n", "the LF alone is the trailing newline"),
        (b"a", "true", "a", "no newline: unchanged"),
        (b"a ", "true", "a ", "trailing space is part of the value"),
        (b"a \n", "true", "a ", "space before the newline stays"),
        (b"a\t", "true", "a\t", "trailing tab stays"),
        (b" \ta b\n", "true", " \ta b", "leading and inner whitespace stay"),
        (b"a\r", "true", "a\r", "a lone CR is not a newline"),
        (b"a\n\r", "true", "a\n\r", "LF then CR is not a trailing newline"),
        (b"a\n", "false", "a\n", "StripNewline false keeps the content exact"),
        (b"a\r\n", "False", "a\r\n", "the flag is case-insensitive"),
        (b"a\n", "", "a", "an empty flag means the default, true"),
        ("pässwörd\n".encode(), "true", "pässwörd", "UTF-8 is decoded"),
    ],
)
def test_newline_rule(secrets: Path, content: bytes, strip: str, expected: str, reason: str) -> None:
    (secrets / "s").write_bytes(content)
    assert value(resolve(secrets, "s", StripNewline=strip)) == expected, reason


def test_stripnewline_defaults_to_true(secrets: Path) -> None:
    (secrets / "s").write_bytes(b"v\r\n")
    assert value(resolve(secrets, "s")) == "v"


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"], ids=["empty", "lf", "crlf"])
def test_an_empty_value_is_not_found(secrets: Path, content: bytes) -> None:
    (secrets / "s").write_bytes(content)
    with pytest.raises(SecretNotFound, match="file 's' is empty"):
        resolve(secrets, "s")


def test_subdirectories_and_inside_symlinks_are_fine(secrets: Path) -> None:
    (secrets / "sub").mkdir()
    (secrets / "sub" / "inner").write_text("inner-value")
    (secrets / "alias").symlink_to("sub/inner")
    (secrets / "absolute-alias").symlink_to(secrets / "sub" / "inner")
    assert value(resolve(secrets, "sub/inner")) == "inner-value"
    assert value(resolve(secrets, "./sub//inner")) == "inner-value"
    assert value(resolve(secrets, "alias")) == "inner-value"
    assert value(resolve(secrets, "absolute-alias")) == "inner-value"


def test_directory_may_itself_be_a_symlink(tmp_path: Path, secrets: Path) -> None:
    (secrets / "s").write_text("v")
    (tmp_path / "run-secrets").symlink_to(secrets)
    assert value(resolve(tmp_path / "run-secrets", "s")) == "v"


# --- staying inside Directory --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "match", "reason"),
    [
        ("", "File is required", "no name"),
        ("/etc/passwd", "must be relative", "absolute path"),
        ("{outside}", "must be relative", "absolute path to the planted file"),
        ("../outside/secret", "must not contain '..'", "parent component"),
        ("sub/../../outside/secret", "must not contain '..'", "parent component in the middle"),
        ("sub/..", "must not contain '..'", "parent component at the end, even if it stays inside"),
        (".", "resolves outside", "the directory itself is not a file in it"),
        ("link-out", "resolves outside", "symlink to an absolute path outside"),
        ("link-up", "resolves outside", "relative symlink climbing out"),
        ("dir-out/secret", "resolves outside", "symlinked directory leading outside"),
        ("k8s/..data/../../outside/secret", "must not contain '..'", "'..' after a k8s-looking component"),
        ("nul\0byte", "NUL", "NUL character"),
    ],
)
def test_paths_leading_outside_are_refused(tmp_path: Path, secrets: Path, file: str, match: str, reason: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(PLANTED)
    (secrets / "sub").mkdir()
    (secrets / "link-out").symlink_to(outside / "secret")
    (secrets / "link-up").symlink_to("../outside/secret")
    (secrets / "dir-out").symlink_to(outside)
    file = file.replace("{outside}", str(outside / "secret"))
    with pytest.raises(BadParameters, match=match) as caught:
        resolve(secrets, file)
    assert caught.value.parameter == "File", reason
    assert PLANTED not in shown(caught.value)


# --- Kubernetes layout and rotation --------------------------------------------------------------


def _k8s_revision(volume: Path, stamp: str, files: dict[str, str]) -> None:
    """What the kubelet's atomic writer does: a timestamped directory, then ``..data`` swapped to it
    by renaming a new symlink over the old one, then the old directory removed."""
    revision = volume / f"..{stamp}"
    revision.mkdir()
    for name, content in files.items():
        (revision / name).write_text(content)
        settle(revision / name)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    (volume / "..data_tmp").symlink_to(revision.name)
    os.rename(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(volume / old)


def test_kubernetes_atomic_swap_is_seen(secrets: Path) -> None:
    provider = FileProvider()
    _k8s_revision(secrets, "2024_01_01_00_00_00.1", {"password": "old-password\n", "username": "relay"})
    assert value(resolve(secrets, "password", provider)) == "old-password"
    assert value(resolve(secrets, "password", provider)) == "old-password"  # from the cache
    _k8s_revision(secrets, "2024_01_02_00_00_00.2", {"password": "new-password\n", "username": "relay"})
    assert value(resolve(secrets, "password", provider)) == "new-password"
    assert value(resolve(secrets, "..data/username", provider)) == "relay"


def test_reads_racing_kubernetes_swaps_never_fail(secrets: Path) -> None:
    provider = FileProvider()
    _k8s_revision(secrets, "r0", {"password": "v0"})
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(value(resolve(secrets, "password", provider)))
            except BaseException as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(1, 200):
        _k8s_revision(secrets, f"r{i}", {"password": f"v{i}"})
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert value(resolve(secrets, "password", provider)) == "v199"
    assert len(seen) > 1


def test_plain_rewrite_is_seen_even_within_one_timestamp_tick(secrets: Path) -> None:
    provider = FileProvider()
    path = secrets / "s"
    path.write_text("one")
    assert value(resolve(secrets, "s", provider)) == "one"
    status = path.stat()
    with path.open("r+") as f:  # same inode, same size
        f.write("two")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))  # and the same mtime
    assert value(resolve(secrets, "s", provider)) == "two", "a recently modified file is always re-read"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("mtime", "same inode and size, new mtime"),
        ("size", "same inode and mtime, new size"),
        ("inode", "replaced by rename: same size and mtime, new inode"),
    ],
)
def test_a_change_of_identity_is_seen(secrets: Path, change: str, reason: str) -> None:
    provider = FileProvider()
    path = secrets / "s"
    path.write_text("one")
    settle(path)
    mtime = path.stat().st_mtime_ns
    assert value(resolve(secrets, "s", provider)) == "one"
    if change == "mtime":
        path.write_text("two")
        settle(path, HOUR_NS // 2)
    elif change == "size":
        path.write_text("three")
        os.utime(path, ns=(mtime, mtime))
    else:
        (secrets / "s.new").write_text("two")
        os.utime(secrets / "s.new", ns=(mtime, mtime))
        os.rename(secrets / "s.new", path)
    assert value(resolve(secrets, "s", provider)) != "one", reason


def test_an_unchanged_identity_is_served_from_the_cache(secrets: Path) -> None:
    # Documents the rule: a settled file whose inode, size and mtime are all unchanged is not read
    # again. (Only a writer that restores the old mtime on purpose gets here.)
    provider = FileProvider()
    path = secrets / "s"
    path.write_text("one")
    settle(path)
    status = path.stat()
    assert value(resolve(secrets, "s", provider)) == "one"
    with path.open("r+") as f:
        f.write("two")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert value(resolve(secrets, "s", provider)) == "one"
    assert value(resolve(secrets, "s", FileProvider())) == "two"  # a fresh provider reads it


# --- errors -------------------------------------------------------------------------------------


def test_missing_file_is_not_found_and_named(secrets: Path) -> None:
    with pytest.raises(SecretNotFound, match="no file 'smtp-password' in Directory"):
        resolve(secrets, "smtp-password")
    with pytest.raises(SecretNotFound, match="no file 'nodir/x'"):
        resolve(secrets, "nodir/x")
    (secrets / "plain").write_text("v")
    with pytest.raises(SecretNotFound, match="no file 'plain/x'"):
        resolve(secrets, "plain/x")


def test_a_file_deleted_after_caching_is_not_found(secrets: Path) -> None:
    provider = FileProvider()
    (secrets / "s").write_text("v")
    settle(secrets / "s")
    assert value(resolve(secrets, "s", provider)) == "v"
    (secrets / "s").unlink()
    with pytest.raises(SecretNotFound):
        resolve(secrets, "s", provider)


@pytest.mark.parametrize(
    ("directory", "match"),
    [
        (" /run/secrets", "white space"),
        ("relative/secrets", "absolute path"),
        ("{tmp}/missing", "is not a directory"),
        ("{tmp}/secrets/file", "is not a directory"),
    ],
)
def test_bad_directory(tmp_path: Path, secrets: Path, directory: str, match: str) -> None:
    (secrets / "file").write_text(PLANTED)
    with pytest.raises(BadParameters, match=match) as caught:
        resolve(Path(directory.replace("{tmp}", str(tmp_path))), "file")
    assert caught.value.parameter == "Directory"
    assert PLANTED not in shown(caught.value)


def test_size_limit(secrets: Path) -> None:
    (secrets / "ten").write_text("0123456789")
    (secrets / "eleven").write_text("0123456789A")
    assert value(resolve(secrets, "ten", MaxBytes="10")) == "0123456789"
    with pytest.raises(BadParameters, match=r"'eleven' is larger than MaxBytes \(10\)") as caught:
        resolve(secrets, "eleven", MaxBytes="10")
    assert caught.value.parameter == "MaxBytes"
    (secrets / "big").write_bytes(b"x" * 65537)
    with pytest.raises(BadParameters, match=r"MaxBytes \(65536\)"):
        resolve(secrets, "big")


@pytest.mark.parametrize(("setting", "parameter"), [("0", "MaxBytes"), ("-5", "MaxBytes"), ("lots", "MaxBytes")])
def test_bad_max_bytes(secrets: Path, setting: str, parameter: str) -> None:
    (secrets / "s").write_text("v")
    with pytest.raises(BadParameters) as caught:
        resolve(secrets, "s", MaxBytes=setting)
    assert caught.value.parameter == parameter


def test_bad_strip_newline(secrets: Path) -> None:
    (secrets / "s").write_text("v")
    with pytest.raises(BadParameters) as caught:
        resolve(secrets, "s", StripNewline="maybe")
    assert caught.value.parameter == "StripNewline"


def test_not_utf8_is_refused_without_content(secrets: Path) -> None:
    (secrets / "s").write_bytes(PLANTED.encode() + b"\xff\xfe")
    with pytest.raises(BadParameters, match="file 's' is not UTF-8 text") as caught:
        resolve(secrets, "s")
    assert caught.value.parameter == "File"
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert PLANTED not in shown(caught.value)


def test_only_regular_files_are_read(secrets: Path) -> None:
    (secrets / "dir").mkdir()
    os.mkfifo(secrets / "fifo")  # opening a FIFO for reading would block without O_NONBLOCK
    for name in ("dir", "fifo"):
        with pytest.raises(BadParameters, match="not a regular file") as caught:
            resolve(secrets, name)
        assert caught.value.parameter == "File"


_UNPRIVILEGED_READ = """
import json, sys
from smtpconfig.plugin.testing import prepare_initialization
from smtpconfig_file_provider import FileProvider
out = {}
init = prepare_initialization(FileProvider, {"Directory": sys.argv[1]})
for name in sys.argv[2:]:
    try:
        FileProvider().resolve({"File": name}, init)
        out[name] = ["ok", ""]
    except Exception as error:
        out[name] = [type(error).__name__, str(error)]
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"uid": __import__("os").geteuid(), "cap_eff": int(status["CapEff"], 16), "results": out}))
"""

# Capability bits: CAP_DAC_OVERRIDE lets root read any file, CAP_DAC_READ_SEARCH any directory.
_DAC_CAPS = (1 << 1) | (1 << 2)


def test_unreadable_file_is_access_denied() -> None:
    # Root reads mode-000 files through CAP_DAC_OVERRIDE. So as root the provider runs in a child
    # process whose capability bounding set lacks the two DAC capabilities (setpriv, util-linux),
    # where the kernel refuses for real; as any other user it runs here. (Running as `nobody` is
    # not an option here: the interpreter lives under root's 0700 home.)
    directory = Path(tempfile.mkdtemp(prefix="scfile", dir="/tmp"))
    try:
        (directory / "readable").write_text("fine")
        (directory / "private").write_text(PLANTED)
        (directory / "private").chmod(0o000)
        (directory / "closed").mkdir()
        (directory / "closed" / "inner").write_text(PLANTED)
        (directory / "closed").chmod(0o000)
        names = ["readable", "private", "closed/inner"]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to drop root's DAC capabilities"
            child = subprocess.run(
                [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--",
                 sys.executable, "-c", _UNPRIVILEGED_READ, str(directory), *names],
                cwd="/", capture_output=True, text=True, timeout=60,
                env={"PATH": os.defpath, "PYTHONDONTWRITEBYTECODE": "1"},
            )
            assert child.returncode == 0, child.stderr
            report = json.loads(child.stdout)
            assert report["cap_eff"] & _DAC_CAPS == 0, "the child must not be able to override permissions"
            results = report["results"]
        else:
            results = {}
            for name in names:
                try:
                    resolve(directory, name)
                    results[name] = ["ok", ""]
                except Exception as error:  # noqa: BLE001 - reported like the child does
                    results[name] = [type(error).__name__, str(error)]
        assert results["readable"] == ["ok", ""], "the restricted reader works at all"
        assert results["private"] == [AccessDenied.__name__, "file 'private': permission denied"]
        assert results["closed/inner"] == [AccessDenied.__name__, "file 'closed/inner': permission denied"]
        assert PLANTED not in json.dumps(results)
    finally:
        (directory / "closed").chmod(0o700)
        shutil.rmtree(directory, ignore_errors=True)


def test_concurrent_reads_of_many_files(secrets: Path) -> None:
    for i in range(20):
        (secrets / f"s{i}").write_text(f"v{i}\n")
    provider = FileProvider()
    results: dict[int, list[str]] = {i: [] for i in range(50)}

    def work(i: int) -> None:
        for _ in range(20):
            results[i].append(value(resolve(secrets, f"s{i % 20}", provider)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, got in results.items():
        assert got == [f"v{i % 20}"] * 20
