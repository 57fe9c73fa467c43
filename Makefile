# The two commands a newcomer needs: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
PROTOS := $(wildcard protos/smtpconfig/v1/*.proto protos/smtpconfig/v2/*.proto)

.PHONY: run test typecheck proto bench profile stages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per extra, so `make run` does not pull in test tools.
$(VENV)/.run.stamp: $(BIN)/python pyproject.toml constraints.txt plugins/file-provider/pyproject.toml
	$(PIP) -e . -e ./plugins/file-provider
	touch $@

$(VENV)/.test.stamp: $(BIN)/python pyproject.toml constraints.txt plugins/file-provider/pyproject.toml
	$(PIP) -e '.[test]' -e ./plugins/file-provider
	touch $@

## Start the service on its embedded default (SQLite under ./smtpconfig-data).
run: $(VENV)/.run.stamp
	exec $(BIN)/smtpconfig serve

## Set up what the tests need, lint ([tool.ruff]), type-check ([tool.mypy]), check the layer contracts
## (pyproject.toml) and run the tests.
test: $(VENV)/.test.stamp
	$(BIN)/ruff check service plugins tests bench
	$(MAKE) typecheck
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

## mypy over service/ and plugins/ as installed: build/mypy/smtpconfig links the folders that
## [tool.setuptools.package-dir] maps, since mypy cannot read setuptools' editable finder.
typecheck: $(VENV)/.test.stamp
	rm -rf build/mypy && mkdir -p build/mypy/smtpconfig
	ln -s $(CURDIR)/service/* build/mypy/smtpconfig/
	ln -s $(CURDIR)/plugins build/mypy/smtpconfig/providers
	ln -s $(CURDIR)/protos/smtpconfig/v1 $(CURDIR)/protos/smtpconfig/v2 build/mypy/smtpconfig/
	$(BIN)/mypy

## Regenerate the committed protobuf and gRPC code next to the .proto files.
proto: $(VENV)/.test.stamp
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos $(PROTOS)

## Throughput and latency of the service against a bare grpcio server, measured in one run.
bench: $(VENV)/.test.stamp
	$(BIN)/python -m bench

## Where each server's CPU per call goes, by thread and by code (needs perf; see bench/README.md).
profile: $(VENV)/.test.stamp
	$(BIN)/python -m bench.profile

## Which part of a warm call's handling costs what inside the server (see bench/README.md).
stages: $(VENV)/.test.stamp
	$(BIN)/python -m bench.stages --method CheckSecret
	$(BIN)/python -m bench.stages --method ResolveSmtp

clean:
	rm -rf $(VENV) build *.egg-info
