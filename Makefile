# The README's commands. Both start what they need on a fresh machine.
CARGO ?= cargo

.PHONY: run test deps build unit check fmt clean

## make run: the whole system locally; the API answers on 127.0.0.1:3000.
run: deps
	$(CARGO) build -p local-stack -p fsctl
	infra/local/with-stack.sh run 7001 5000 -- $(CARGO) run -q -p local-stack

## make test: every test, unit and integration, against a fresh local stack.
test: deps
	$(CARGO) build --workspace --tests
	FS_TEST_CLUSTERS=1 infra/local/with-stack.sh test 7101 5100 -- infra/local/run-tests.sh -- --test-threads 4

## make unit: the tests that need no running services.
unit:
	$(CARGO) test --workspace --lib --bins

deps:
	infra/local/deps.sh

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf .run target
