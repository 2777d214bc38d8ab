# One entry point for people and CI. Everything runs inside .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean image image-base image-test k8s

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest --ignore=tests/image

lint: $(STAMP)
	$(BIN)/ruff check sidecar tests bench deploy dashboards
	$(BIN)/ruff format --check sidecar tests bench deploy dashboards
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/deepseek-sidecar demo

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scrape.py

# Regenerates the manifests in deploy/k8s copied from other sources (docs/kubernetes.md).
k8s: $(STAMP)
	$(BIN)/python deploy/k8s/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .build

# Container image (docs/container.md). The wheels are built here, for the base image's Python
# version and platform, and copied in: the build needs no package index, and the image gets the
# dependency versions installed in .venv, the ones the tests ran against.
IMAGE ?= deepseek-sidecar:dev
BASE_IMAGE ?= python:3.12-slim
IMAGE_PYTHON ?= 3.12
STANDIN_BASE ?= localhost/deepseek-sidecar-standin:bookworm
# The opt-in shared guard (Redis) and OpenTelemetry export work in the image without a rebuild.
IMAGE_EXTRAS := redis,otel
IMAGE_BUILD := .build/image
IMAGE_WHEELS := $(IMAGE_BUILD)/wheels-py$(IMAGE_PYTHON)
IMAGE_ARCH := $(shell uname -m)
# glibc 2.5 to 2.36 (bookworm): wheels that run on Debian 12 and on every newer base.
IMAGE_PLATFORMS := $(foreach v,$(shell seq 5 36),--platform manylinux_2_$(v)_$(IMAGE_ARCH)) \
	--platform manylinux2014_$(IMAGE_ARCH) --platform manylinux2010_$(IMAGE_ARCH) \
	--platform manylinux1_$(IMAGE_ARCH)
VERSION = $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

image: $(STAMP)
	rm -rf $(IMAGE_BUILD)/src $(IMAGE_WHEELS)
	mkdir -p $(IMAGE_BUILD)/src $(IMAGE_WHEELS)
	@# A clean copy of the source: no stale build/ files can slip into the wheel.
	cp -R pyproject.toml README.md sidecar $(IMAGE_BUILD)/src/
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(IMAGE_WHEELS) $(IMAGE_BUILD)/src
	$(BIN)/pip freeze --exclude-editable > $(IMAGE_BUILD)/constraints.txt
	@# async-timeout: redis needs it on Pythons before 3.11.3 (Debian 12 has 3.11.2), a marker
	@# that --python-version X.Y cannot see; on newer Pythons the wheel is simply not installed.
	$(BIN)/pip download --quiet --only-binary=:all: --implementation cp \
		--python-version $(IMAGE_PYTHON) --abi cp$(subst .,,$(IMAGE_PYTHON)) --abi abi3 --abi none \
		$(IMAGE_PLATFORMS) --constraint $(IMAGE_BUILD)/constraints.txt --dest $(IMAGE_WHEELS) \
		"$(IMAGE_WHEELS)/deepseek_sidecar-$(VERSION)-py3-none-any.whl[$(IMAGE_EXTRAS)]" \
		"async-timeout>=4.0.3"
	scripts/build-image.sh $(IMAGE) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg WHEELS=$(IMAGE_WHEELS) --build-arg VERSION=$(VERSION) \
		--build-arg EXTRAS=$(IMAGE_EXTRAS) \
		--build-arg SOURCE_URL=$(shell git remote get-url origin 2>/dev/null) \
		--build-arg REVISION=$(shell git rev-parse HEAD 2>/dev/null)

# A registry-free stand-in for python:3.12-slim (Debian 12, Python 3.11), built once and reused.
image-base:
	scripts/standin-base.sh $(STANDIN_BASE)

# Builds the image on the stand-in base and runs it in a pod: slow, needs podman, buildah, runc
# and debootstrap (root), so it is not part of `make test`.
image-test: $(STAMP)
	SIDECAR_IMAGE_TEST=1 STANDIN_BASE=$(STANDIN_BASE) $(BIN)/pytest --confcutdir=tests/image \
		-p no:cacheprovider tests/image
