# The two commands a newcomer needs: `make demo` and `make test`. CI runs `make ci`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test peers generate fmt lint bench ci e2e image fuzz fuzz-smoke fuzz-merge

## Standalone demo: moto + `rolegate serve` + an unmodified boto3 "pod" getting credentials.
demo:
	scripts/demo.sh

## Every test, against the real peers (installed first: xmlsec1, moto, pysaml2, boto3, awscli).
test: peers
	scripts/with-moto.sh $(CARGO) test --all-targets --no-fail-fast

peers:
	tests/peers/install.sh

## The system test's scenario (tests/system.rs) against a real, disposable cluster, the chart
## installed there with helm: ROLEGATE_E2E_KUBECONFIG names it (or KUBECONFIG with
## ROLEGATE_E2E=1), ROLEGATE_E2E_IMAGE the image loaded into its nodes (default rolegate:e2e),
## ROLEGATE_E2E_MOTO_HOST where its pods reach this machine's moto (ROLEGATE_MOTO_HOST=0.0.0.0
## binds it there), ROLEGATE_E2E_NODE_EXEC a command prefix that runs on a node's network (the
## agent's link-local address). .github/workflows/e2e-kind.yml runs it on kind.
e2e: peers
	scripts/with-moto.sh $(CARGO) test --test system -- --ignored --nocapture system_on_a_real_cluster

## The container image without Docker (scripts/image.sh: release binary, mmdebstrap, umoci) as an
## OCI layout in target/image (+ target/image.tar), then tests/image.rs runs it from the unpacked
## root filesystem. Needs root or user namespaces; apt-get install -y mmdebstrap umoci skopeo.
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)
image: peers
	IMAGE_TAG=$(IMAGE_TAG) scripts/image.sh
	ROLEGATE_IMAGE=target/image:$(IMAGE_TAG) scripts/with-moto.sh $(CARGO) test --test image -- --ignored

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

## Fuzz every parser of outside input (fuzz/README.md) for FUZZ_SECONDS each, on nightly with
## cargo-fuzz. New inputs go to fuzz/work/ (ignored); `make fuzz-merge` keeps the ones that add
## coverage in the committed corpus. `cargo test --test fuzz_corpora` replays that corpus on stable.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = $(shell sed -n 's/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml | grep -v '^rolegate-fuzz$$')
FUZZ = cd fuzz && $(CARGO) +nightly fuzz
FUZZ_FLAGS = --sanitizer none --debug-assertions

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/work/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  ($(FUZZ) run $(FUZZ_FLAGS) $$t work/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1); \
	done

## A few seconds of each target: they build, and the seeds plus a little more hold.
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=5

## Adds the inputs of fuzz/work/ that cover something new to the committed corpus.
fuzz-merge:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/work/$$t; \
	  ($(FUZZ) run $(FUZZ_FLAGS) $$t -- -merge=1 corpus/$$t work/$$t); \
	done
