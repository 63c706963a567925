#!/usr/bin/env bash
# Installs what the local stack needs, if missing: redis-server (Debian
# package) and the S3/SQS emulator (moto server, pinned) in a project venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.58.0"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; exit 1; fi
}

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "installing redis-server…"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server redis-tools >/dev/null
fi
# The packaged service is not used: the stack starts its own cluster.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  as_root systemctl stop redis-server || true
fi

if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/python -c "import moto,sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "installing moto $MOTO_VERSION into .venv…"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
if ! .venv/bin/cfn-lint --version 2>/dev/null | grep -q "$CFN_LINT_VERSION"; then
  echo "installing cfn-lint $CFN_LINT_VERSION into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
fi
# The template's security scan (checkov) and SAM's own validation (in a venv
# of its own: the SAM CLI pins its own cfn-lint).
CHECKOV_VERSION="3.3.30"
SAM_CLI_VERSION="1.170.0"
if ! .venv/bin/checkov --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "installing checkov $CHECKOV_VERSION into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
if ! .venv-sam/bin/sam --version 2>/dev/null | grep -q "$SAM_CLI_VERSION"; then
  echo "installing the SAM CLI $SAM_CLI_VERSION into .venv-sam…"
  python3 -m venv .venv-sam
  .venv-sam/bin/pip install -q --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION"
fi
# The tests write Parquet batches with the real writers: pyarrow, pandas, Polars.
PYARROW_VERSION="22.0.0"
PANDAS_VERSION="2.3.3"
POLARS_VERSION="1.35.2"
if ! .venv/bin/python -c "import pyarrow, pandas, polars, sys; sys.exit((pyarrow.__version__, pandas.__version__, polars.__version__) != ('$PYARROW_VERSION', '$PANDAS_VERSION', '$POLARS_VERSION'))" 2>/dev/null; then
  echo "installing pyarrow $PYARROW_VERSION, pandas $PANDAS_VERSION and polars $POLARS_VERSION into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "pyarrow==$PYARROW_VERSION" "pandas==$PANDAS_VERSION" "polars==$POLARS_VERSION"
fi
# The API test checks the OpenAPI document with a maintained validator.
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('openapi-spec-validator') != '$OPENAPI_SPEC_VALIDATOR_VERSION')" 2>/dev/null; then
  echo "installing openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi
# The Python package is built by maturin.
MATURIN_VERSION="1.16.0"
if ! .venv/bin/maturin --version 2>/dev/null | grep -q "$MATURIN_VERSION"; then
  echo "installing maturin $MATURIN_VERSION into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi
# The tests compress batches with the real tools.
if ! command -v zstd >/dev/null || ! command -v gzip >/dev/null; then
  echo "installing gzip and zstd…"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq gzip zstd >/dev/null
fi
command -v openssl >/dev/null || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null; }
# `make bench` only: wrk loads the local HTTP gateway.
if [ "${1:-}" = bench ] && ! command -v wrk >/dev/null; then
  echo "installing wrk…"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi
# `make package` only: cargo-lambda (with Zig) builds the Lambda zips.
if [ "${1:-}" = package ] && ! .venv/bin/cargo-lambda --version 2>/dev/null | grep -q "1.9.2"; then
  echo "installing cargo-lambda 1.9.2 into .venv…"
  .venv/bin/pip install -q --disable-pip-version-check "cargo-lambda==1.9.2"
fi
