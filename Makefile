# The README's commands. Both start what they need on a fresh machine.
CARGO ?= cargo

.PHONY: run test bench bench-quick deps build unit lint package check-package fmt clean python python-venv

## make run: the whole system locally; the API answers on 127.0.0.1:3000.
run: deps
	$(CARGO) build -p local-stack -p fsctl
	infra/local/with-stack.sh run 7001 5000 -- $(CARGO) run -q -p local-stack -- $(RUN_ARGS)

## make test: every test, unit and integration, against a fresh local stack,
## the deployment template's checks, and the Lambda packages.
test: deps lint check-package python-venv
	$(CARGO) build --workspace --bins --tests
	FS_TEST_CLUSTERS=1 infra/local/with-stack.sh test 7101 5100 -- infra/local/run-tests.sh -- --test-threads 4

## make python: the Python package's wheel (release build) in target/wheels/.
python: deps
	rm -f target/wheels/featurestore-*.whl
	.venv/bin/maturin build --release -m python/Cargo.toml -o target/wheels

## make python-venv: the wheel (a debug build, sharing the tests' compiled
## crates) installed with pytest into a fresh venv, target/python-venv, where
## the integration tests run the package's own tests.
PYTEST_VERSION = 8.4.2
python-venv: deps
	rm -f target/wheels/featurestore-*.whl
	.venv/bin/maturin build -q --profile dev -m python/Cargo.toml -o target/wheels
	python3 -m venv --clear target/python-venv
	target/python-venv/bin/pip install -q --disable-pip-version-check pytest==$(PYTEST_VERSION) target/wheels/featurestore-*.whl

## make lint: formatting, clippy's warnings as errors, the SAM template by
## cfn-lint, checkov (0 failed checks; each skip says why in the template) and
## `sam validate --lint`, serve linking no S3 or SQS code, and the client
## library (and so the Python package) linking no AWS SDK at all.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	.venv/bin/cfn-lint infra/template.yaml
	.venv/bin/checkov -f infra/template.yaml --framework cloudformation --quiet --compact --skip-download
	cd infra && SAM_CLI_TELEMETRY=0 ../.venv-sam/bin/sam validate --lint --region us-east-1
	@if $(CARGO) tree -p serve -e normal | grep -qE 'aws-sdk-(s3|sqs)'; then echo "serve links the S3/SQS SDKs" >&2; exit 1; fi
	@if $(CARGO) tree -p featurestore -e normal | grep -qE 'aws-'; then echo "the client library links an AWS SDK" >&2; exit 1; fi

## make package: the four Lambda zips (bootstrap inside), built here for x86_64.
## ARCH=arm64 builds for Graviton where the aarch64 standard library is installed.
ARCH ?= x86-64
package:
	infra/local/deps.sh package
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) lambda build --release --$(ARCH) --output-format zip -p ingest -p serve
	@ls -l target/lambda/*/bootstrap.zip

check-package: package
	python3 infra/check_package.py target/lambda/planner/bootstrap.zip target/lambda/ingest/bootstrap.zip target/lambda/janitor/bootstrap.zip target/lambda/serve/bootstrap.zip

## make bench: ingest, serving and memory, each beside its reference, on the
## local stack; prints one table and writes bench/results/latest.{json,md}.
## The Python client is measured from a venv of its own (target/bench-venv)
## beside redis-py with hiredis.
REDIS_PY_VERSION = 8.2.0
HIREDIS_VERSION = 3.5.0
bench: python
	infra/local/deps.sh bench
	python3 -m venv --clear target/bench-venv
	target/bench-venv/bin/pip install -q --disable-pip-version-check redis==$(REDIS_PY_VERSION) hiredis==$(HIREDIS_VERSION) target/wheels/featurestore-*.whl
	$(CARGO) build --release -p bench
	infra/local/with-stack.sh bench 7201 5200 -- target/release/bench $(BENCH_ARGS)

## make bench-quick: the same with smaller batches (a smoke run).
bench-quick:
	$(MAKE) bench BENCH_ARGS=--quick

## make unit: the tests that need no running services.
unit:
	$(CARGO) test --workspace --lib --bins

deps:
	infra/local/deps.sh

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf .run target
