# The two quick-start commands, each doing its own set-up:
#   make run    trains the main recipe (RECIPE=..., DATA_ROOT=..., ARGS="--set key=value ...")
#   make test   runs the test suite
VENV ?= .venv
PYTHON ?= python3
RECIPE ?= recipes/infogan_mnist.toml
# The MNIST recipes read the shared 10,000-digit folder unless DATA_ROOT says otherwise. Other
# recipes get no default: Fashion-MNIST's files have the same names as MNIST's.
MNIST_RECIPES = recipes/infogan_mnist.toml recipes/dcgan_mnist.toml
DATA_ROOT ?= $(if $(filter $(MNIST_RECIPES),$(RECIPE)),$(abspath ../shared/data/mnist))

# torch 2.14.1 with torchvision 0.29.1: a matching pair (other torch builds break torchvision's import).
$(VENV)/.installed: pyproject.toml docs/examples/ganforge-vonmises/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	$(VENV)/bin/python -m pip install --quiet -e docs/examples/ganforge-vonmises
	touch $@

.PHONY: run test
run: $(VENV)/.installed
	$(VENV)/bin/ganforge run $(RECIPE) $(if $(DATA_ROOT),--set data.root=$(DATA_ROOT)) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q --durations=15
