# The two commands a newcomer needs: `make demo` and `make test`. CI runs `make ci`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test peers generate fmt lint bench ci e2e

## Standalone demo: moto + `rolegate serve` + an unmodified boto3 "pod" getting credentials.
demo:
	scripts/demo.sh

## Every test, against the real peers (installed first: xmlsec1, moto, pysaml2, boto3, awscli).
test: peers
	scripts/with-moto.sh $(CARGO) test --all-targets --no-fail-fast

peers:
	tests/peers/install.sh

## Against a real, disposable cluster (the current kubeconfig): CRDs, resources, controller,
## server, statuses and a pod's credentials.
e2e: peers
	scripts/with-moto.sh $(CARGO) test --test e2e_cluster -- --ignored --nocapture

## Regenerate the CRDs under crds/ from the Rust types.
generate:
	$(CARGO) run --quiet -- crds --out crds
	$(CARGO) run --quiet -- crds --out charts/rolegate/crds

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Criterion benchmark of assertion build+sign, beside `openssl speed rsa2048` from the same run.
bench:
	scripts/bench.sh

ci: test lint
