"""Offline evaluation: a feature network trained here and verified by checksum, FID/KID/precision-
recall in its space on real digits, the metrics chosen by name, and every failure one line."""

from __future__ import annotations

import json

import pytest
import torch

from ganforge.data import ImageData
from ganforge.evaluator import EvaluatorError, default_path, load_evaluator, train_evaluator
from ganforge_plugins.quality import frechet_distance, kernel_distance, manifold_scores

from .conftest import assert_one_line_cli_error, invoke, run_tiny

INFOGAN = {"codes": [{"name": "shape", "dist": "categorical", "size": 4, "weight": 1.0}], "traverse_every_sample": False}


@pytest.fixture(scope="module")
def digits():
    from ganforge_plugins.datasets import MNIST  # noqa: F401  (the loader the recipes use)
    from ganforge.data import DataSettings

    from .conftest import SHARED_MNIST, make_host

    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("the shared MNIST test split is absent")
    load = make_host().datasets.get("mnist")
    data = load(settings=DataSettings(name="mnist", root=SHARED_MNIST, split="all"))
    return ImageData(data.images[:3000], {"label": data.labels["label"][:3000]}, source="mnist first 3000")


@pytest.fixture(scope="module")
def evaluator(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("home") / "mnist.pt"
    return train_evaluator(digits, "mnist", "all", 1000, epochs=5, out=path, log=lambda line: None)


def test_a_trained_feature_network_records_how_it_was_made_and_is_checked_by_sha256(evaluator, tmp_path):
    record = json.loads(evaluator.path.with_suffix(".json").read_text())
    assert record["dataset"] == "mnist" and record["trained_on"] == 2000 and record["held_out"]["images"] == 1000
    assert record["held_out"]["accuracy"] > 0.8  # 5 epochs on 2,000 digits; far above chance (0.1)
    assert load_evaluator(evaluator.path).sha256 == record["sha256"]
    altered = tmp_path / "altered.pt"
    altered.write_bytes(evaluator.path.read_bytes() + b"\0")
    altered.with_suffix(".json").write_text(evaluator.path.with_suffix(".json").read_text())
    with pytest.raises(EvaluatorError, match="does not match the SHA-256 in altered.json"):
        load_evaluator(altered)
    with pytest.raises(EvaluatorError, match="no feature network at"):
        load_evaluator(tmp_path / "absent.pt")


def test_fid_of_real_digits_against_themselves_is_about_0_and_grows_with_corruption(evaluator, digits):
    images = digits.images[:2000]
    first, second = evaluator.features(images[:1000]), evaluator.features(images[1000:])
    assert frechet_distance(first, first) < 1e-6
    rng = torch.Generator().manual_seed(0)
    scores = []
    for strength in (0.0, 0.1, 0.3, 0.6):
        noisy = (images[1000:].float() / 127.5 - 1) + strength * torch.randn(1000, 1, 28, 28, generator=rng)
        scores.append(frechet_distance(first, evaluator.features(noisy.clamp(-1, 1))))
    assert scores == sorted(scores) and scores[0] < scores[-1] / 10, scores
    kid_same, _, _ = kernel_distance(first, second)
    kid_noisy, _, _ = kernel_distance(first, evaluator.features(
        ((images[1000:].float() / 127.5 - 1) + 0.6 * torch.randn(1000, 1, 28, 28, generator=rng)).clamp(-1, 1)))
    assert abs(kid_same) < kid_noisy
    same = manifold_scores(first, second)
    assert set(same) == {"precision", "recall", "density", "coverage"} and same["precision"] > 0.5


def test_eval_reports_quality_and_generator_agreement_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    run = run_tiny(tmp_path, plugins={"infogan": INFOGAN})
    data = run.data
    train_evaluator(data, "shapes", "train", 56, epochs=1, out=default_path("shapes", data.image_shape),
                    log=lambda line: None)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    result = invoke("eval", run.directory, "--json", "--n", "200")
    assert result.exit_code == 0, result.stderr
    assert torch.equal(state, torch.get_rng_state())
    report = json.loads(result.stdout)
    for name in ("fid", "kid", "precision", "recall", "density", "coverage", "shape/generated_accuracy"):
        assert isinstance(report[name], float), name
    facts = report["provenance"]["fid"]
    assert facts["real_images"] == 200 and facts["generated_images"] == 200 and facts["step"] == 4
    assert len(facts["feature_sha256"]) == 64 and facts["layer"] == "pooled-128"
    again = json.loads(invoke("eval", run.directory, "--json", "--n", "200", "--metrics", "fid").stdout)
    assert again["fid"] == report["fid"] and "kid" not in again  # cached real features, same images


def test_metric_mistakes_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    run = run_tiny(tmp_path)
    assert_one_line_cli_error(invoke("eval", run.directory, "--metrics", "fdi"), 2,
                              "--metrics: unknown metric 'fdi'; did you mean 'fid'?")
    assert_one_line_cli_error(invoke("eval", run.directory, "--metrics", "fid"), 2,
                              "no feature network for shapes 1x28x28 at", "ganforge evaluator train --data shapes")
    skipped = invoke("eval", run.directory)
    assert skipped.exit_code == 0 and "note: fid skipped: no feature network" in skipped.stderr
    train_evaluator(run.data, "shapes", "train", 56, epochs=1, out=default_path("shapes", run.data.image_shape),
                    log=lambda line: None)
    assert invoke("eval", run.directory, "--metrics", "fid", "--n", "100").exit_code == 0
    for cached in (tmp_path / "home" / "features").glob("*.pt"):
        cached.write_bytes(b"not a tensor file")
    assert_one_line_cli_error(invoke("eval", run.directory, "--metrics", "fid", "--n", "100"), 2,
                              "cannot read the cached real features")
