# Kova: `make test` and `make demo` work on a fresh machine with Go and Python 3.11+ (they build or
# install everything else). Built binaries go to $(CACHE)/bin, keyed by a hash of what pins them, so a
# second run rebuilds nothing.

SHELL := /bin/bash
PYTHON ?= python3
CACHE ?= .cache
VENV ?= .venv
BIN := $(abspath $(CACHE))/bin
PY := $(VENV)/bin/python
GO_MOD := tests/cloud/go
# MinIO publishes no semver tags; this is the pseudo-version of a commit on its main branch.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
HELM_VERSION := v4.3.1
K8S_VERSION := $(shell sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' $(GO_MOD)/go.mod)
K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
# Kubernetes' own build stamps its version this way; without it the binaries say v0.0.0-master.
GO_LDFLAGS := -s -w $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(pkg).gitVersion=$(K8S_VERSION) -X $(pkg).gitMajor=1 -X $(pkg).gitMinor=$(K8S_MINOR) \
	-X $(pkg).gitTreeState=clean -X $(pkg).buildDate=1970-01-01T00:00:00Z)
HELM_LDFLAGS := -s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)
K8S_BINS := kube-apiserver kube-controller-manager kube-scheduler kubectl
BINS_KEY := $(shell cat $(GO_MOD)/go.mod $(GO_MOD)/go.sum $(GO_MOD)/cmd/etcd/main.go <(echo '$(MINIO_VERSION) $(HELM_LDFLAGS) $(GO_LDFLAGS) $(K8S_BINS)') | sha256sum | cut -c1-16)
BINS_STAMP := $(BIN)/.built-$(BINS_KEY)
# OpenTofu and the OpenStack provider, for the tests that drive `kova api` the way a Terraform user does.
TOFU_MOD := tests/cloud/go-tofu
OPENSTACK_PROVIDER_VERSION := v3.4.0
# Their releases' own ldflags: without them tofu says 1.10.6-dev and the provider says version "dev".
TOFU_LDFLAGS := -s -w -X github.com/opentofu/opentofu/version.dev=no
PROVIDER_LDFLAGS := -s -w -X github.com/terraform-provider-openstack/terraform-provider-openstack/v3/openstack.version=$(OPENSTACK_PROVIDER_VERSION:v%=%)
TOFU_KEY := $(shell cat $(TOFU_MOD)/go.mod $(TOFU_MOD)/go.sum <(echo '$(OPENSTACK_PROVIDER_VERSION) $(TOFU_LDFLAGS) $(PROVIDER_LDFLAGS)') | sha256sum | cut -c1-16)
TOFU_STAMP := $(BIN)/.tofu-$(TOFU_KEY)
# KubeVirt's and CDI's controllers: one of their dependencies is missing from the checksum database, hence
# GONOSUMDB. cdi-controller's main is CDI's with two hard-wired paths made flags (tests/cloud/go-cdi/cmd).
KV_MOD := tests/cloud/go-kubevirt
CDI_MOD := tests/cloud/go-cdi
CONTROLLERS_KEY := $(shell cat $(KV_MOD)/go.mod $(KV_MOD)/go.sum $(CDI_MOD)/go.mod $(CDI_MOD)/go.sum $(CDI_MOD)/cmd/*/*.go | sha256sum | cut -c1-16)
CONTROLLERS_STAMP := $(BIN)/.controllers-$(CONTROLLERS_KEY)
# external-snapshotter's snapshot-controller (VolumeSnapshots of the simulated CSI driver that clones).
SNAP_MOD := tests/cloud/go-snapshots
SNAP_KEY := $(shell cat $(SNAP_MOD)/go.mod $(SNAP_MOD)/go.sum | sha256sum | cut -c1-16)
SNAP_STAMP := $(BIN)/.snapshots-$(SNAP_KEY)
VENV_KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
VENV_STAMP := $(VENV)/.installed-$(VENV_KEY)
export KOVA_BIN_DIR := $(BIN)
export GOFLAGS := -buildvcs=false
PYTEST_ARGS ?=

.PHONY: help venv bins tofu controllers crds lint unit test demo bench bench-scale cloud-up clean

help:
	@echo "make test     lint, unit and integration tests on the local cloud (builds what it needs)"
	@echo "make demo     local cloud + operator + examples/: an Instance booted from an imported Image"
	@echo "make bench    import throughput and memory; the compute API against kubectl (boot, 500-server list)"
	@echo "make bench-scale  a burst of Instances: latencies, API writes, RSS, restart (KOVA_SCALE_N=500)"
	@echo "make cloud-up run the local cloud in the foreground (Ctrl-C stops it)"
	@echo "make controllers  build KubeVirt's virt-controller, CDI's cdi-controller and cdi-apiserver, snapshot-controller"
	@echo "make crds     regenerate crds/ from the models"

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

bins: $(BINS_STAMP)
$(BINS_STAMP):
	@mkdir -p $(BIN)
	@echo "building $(K8S_BINS) and etcd (first time: many minutes)"
	cd $(GO_MOD) && go build -ldflags="$(GO_LDFLAGS)" -o $(BIN)/ $(addprefix k8s.io/kubernetes/cmd/,$(K8S_BINS)) ./cmd/etcd
	@echo "building helm"
	GOBIN=$(BIN) go install -ldflags="$(HELM_LDFLAGS)" helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	@echo "building minio"
	GOBIN=$(BIN) go install -ldflags="-s -w" github.com/minio/minio@$(MINIO_VERSION)
	@rm -f $(BIN)/.built-* && touch $@

tofu: $(TOFU_STAMP)
$(TOFU_STAMP):
	@mkdir -p $(BIN)
	@echo "building tofu (OpenTofu) and terraform-provider-openstack (first time: several minutes)"
	cd $(TOFU_MOD) && go build -trimpath -ldflags="$(TOFU_LDFLAGS)" -o $(BIN)/tofu github.com/opentofu/opentofu/cmd/tofu
	GOBIN=$(BIN) go install -trimpath -ldflags="$(PROVIDER_LDFLAGS)" \
		github.com/terraform-provider-openstack/terraform-provider-openstack/v3@$(OPENSTACK_PROVIDER_VERSION)
	@rm -f $(BIN)/.tofu-* && touch $@

controllers: $(CONTROLLERS_STAMP) $(SNAP_STAMP)
$(CONTROLLERS_STAMP):
	@mkdir -p $(BIN)
	@echo "building virt-controller (KubeVirt v1.7.0), cdi-controller and cdi-apiserver (CDI v1.65.0) (first time: ~5 minutes)"
	cd $(KV_MOD) && GOTOOLCHAIN=local GONOSUMDB=github.com/rhobs CGO_ENABLED=0 \
		go build -trimpath -ldflags="-s -w" -o $(BIN)/virt-controller kubevirt.io/kubevirt/cmd/virt-controller
	cd $(CDI_MOD) && GOTOOLCHAIN=local GONOSUMDB=github.com/rhobs,github.com/openshift CGO_ENABLED=0 \
		go build -trimpath -ldflags="-s -w" -o $(BIN)/cdi-controller ./cmd/cdi-controller
	cd $(CDI_MOD) && GOTOOLCHAIN=local GONOSUMDB=github.com/rhobs,github.com/openshift CGO_ENABLED=0 \
		go build -trimpath -ldflags="-s -w" -o $(BIN)/cdi-apiserver ./cmd/cdi-apiserver
	@rm -f $(BIN)/.controllers-* && touch $@

$(SNAP_STAMP):
	@mkdir -p $(BIN)
	@echo "building snapshot-controller (external-snapshotter v8.7.0) (first time: ~5 minutes)"
	cd $(SNAP_MOD) && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o $(BIN)/snapshot-controller \
		github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
	@rm -f $(BIN)/.snapshots-* && touch $@

crds: venv
	$(PY) -m kova.cli crds --out crds
	$(PY) -m tests.cloud.kubevirt_crds
	@# The chart carries the same files: CRDs in crds/ (Helm installs them), the policy as a template.
	rm -f charts/kova/crds/*.yaml
	cp crds/*.yaml charts/kova/crds/
	mv charts/kova/crds/protected-images.policy.yaml charts/kova/files/

lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test: venv bins controllers tofu lint
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

demo: venv bins controllers
	$(PY) -m tests.demo

bench: venv bins controllers
	$(PY) -m bench.import_bench
	$(PY) -m bench.upload_bench
	$(PY) -m bench.memory_bench
	$(PY) -m bench.compute_api_bench

bench-scale: venv bins controllers
	$(PY) -m bench.scale_bench

cloud-up: venv bins controllers
	$(PY) -m tests.cloud up --dir $(CACHE)/cloud

clean:
	rm -rf $(VENV) $(CACHE) build dist *.egg-info
