"""The committed generated code is exactly what `make proto` produces from the committed protos."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("smtpconfig/v*/*.proto"))
    assert sources, "no protos found"
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", *sources]
    )
    assert code == 0, "protoc failed"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name.endswith(GENERATED))
    committed = sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*") if p.name.endswith(GENERATED))
    assert fresh == committed, "generated files differ from the committed set: run `make proto`"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (PROTOS / p).read_bytes()]
    assert not stale, f"committed generated code is stale, run `make proto`: {stale}"


def test_every_proto_element_has_a_comment() -> None:
    """buf's style: a comment on every message, field, enum value, service and RPC."""
    import re

    missing = []
    for proto in PROTOS.glob("smtpconfig/v*/*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            element = re.match(r"^(message|enum|service|rpc)\s", s) or re.match(
                r"^(optional |repeated )?[\w.<>, ]+\s+\w+\s*=\s*\d+", s
            ) or re.match(r"^[A-Z_0-9]+\s*=\s*\d+;", s)
            if element and not lines[i - 1].strip().startswith("//"):
                missing.append(f"{proto.name}:{i + 1}: {s}")
    assert not missing, "undocumented proto elements:\n" + "\n".join(missing)
