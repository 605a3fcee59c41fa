"""Offline evaluation: a feature network trained here and verified by checksum, FID/KID/precision-
recall in its space on real digits, the metrics chosen by name, and every failure one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganforge.data import ImageData
from ganforge.evaluation import EvalSettings
from ganforge.launch import evaluate_run
from ganforge.evaluator import EvaluatorError, default_path, load_evaluator, train_evaluator
from ganforge_plugins.metrics.quality import frechet_distance, kernel_distance, manifold_scores

from .conftest import assert_one_line_cli_error, invoke, make_host, run_tiny

INFOGAN = {"codes": [{"name": "shape", "dist": "categorical", "size": 4, "weight": 1.0}], "traverse_every_sample": False}


@pytest.fixture(scope="module")
def digits():
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


def test_compare_puts_the_runs_latest_evaluations_side_by_side(tmp_path):
    first = run_tiny(tmp_path / "a", plugins={"infogan": INFOGAN})
    second = run_tiny(tmp_path / "b", plugins={"infogan": INFOGAN}, run={"seed": 1})
    assert_one_line_cli_error(invoke("compare", first.directory, second.directory), 2,
                              "has no evaluation on its train images; run `ganforge eval")
    for run in (first, second):
        assert invoke("eval", run.directory).exit_code == 0
    table = json.loads(invoke("compare", first.directory, second.directory, "--json").stdout)
    evaluated = [json.loads(line) for line in (first.directory / "evaluations.jsonl").read_text().splitlines()]
    assert table["runs"][0]["shape/accuracy"] == evaluated[-1]["results"]["shape/accuracy"]
    assert [row["step"] for row in table["runs"]] == [4, 4]
    printed = invoke("compare", first.directory, second.directory, "--metrics", "shape/accuracy")
    assert printed.exit_code == 0 and "shape/accuracy" in printed.stdout
    assert_one_line_cli_error(invoke("compare", first.directory, "--metrics", "fid"), 2, "--metrics: no run has 'fid'")


def test_report_is_one_self_contained_page_with_curves_samples_traversals_and_evaluations(tmp_path):
    import re

    run = run_tiny(tmp_path, plugins={"infogan": {**INFOGAN, "traverse_every_sample": True}})
    assert invoke("eval", run.directory).exit_code == 0
    result = invoke("report", run.directory)
    assert result.exit_code == 0, result.stderr
    page = (run.directory / "report.html").read_text()
    samples = len(list((run.directory / "samples").glob("*.png")))
    assert page.count('src="data:image/png;base64,') == samples > 2
    assert page.count("<svg") >= 2 and "polyline" in page and "loss/D/info/shape" in page
    assert "shape/accuracy" in page and "[plugins.infogan]" in page
    # Nothing that a browser would fetch: no external source, link, script or stylesheet.
    assert not re.search(r"""(src|href)=["'](?!data:)""", page) and "<script" not in page and "<link" not in page
    assert_one_line_cli_error(invoke("report", tmp_path), 2, "is not a run directory")


def test_the_report_renders_in_a_headless_browser(tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    run = run_tiny(tmp_path, plugins={"infogan": INFOGAN})
    page = invoke("report", run.directory)
    assert page.exit_code == 0
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
                    (run.directory / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as image:
        pixels = image.convert("L").resize((60, 80))
        assert image.size == (1200, 1600)
        assert len(set(pixels.getdata())) > 5  # something was drawn, not a blank page


def test_image_moments_read_slant_width_height_and_ink():
    from ganforge_plugins.metrics.continuous_codes import image_moments, rank_correlation

    canvas = -torch.ones(4, 1, 28, 28)
    for y in range(6, 22):
        canvas[0, 0, y, 14] = 1  # upright bar
        canvas[1, 0, y, 14 + (22 - y) // 2] = 1  # top leans right: "/"
        canvas[2, 0, y, 14 - (22 - y) // 2] = 1  # top leans left
    canvas[3, 0, 12:16, 4:24] = 1  # a wide, low block
    measures = image_moments(canvas)
    assert abs(float(measures["slant"][0])) < 1e-6
    assert measures["slant"][1] > 0.3 and measures["slant"][2] < -0.3
    assert measures["width"][3] > measures["height"][3] and measures["height"][0] > measures["width"][0]
    assert float(measures["mass"][0]) == 16 and float(measures["mass"][3]) == 80
    torch.testing.assert_close(rank_correlation(torch.tensor([[1.0, 2, 3], [3.0, 2, 1]])), torch.tensor([1.0, -1.0]))


def test_continuous_codes_reports_each_code_s_correlations_and_whether_the_class_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path / "home"))
    codes = {"codes": [*INFOGAN["codes"], {"name": "tilt", "dist": "uniform", "size": 1, "weight": 0.1}],
             "traverse_every_sample": False}
    run = run_tiny(tmp_path, plugins={"infogan": codes})
    train_evaluator(run.data, "shapes", "train", 56, epochs=1, out=default_path("shapes", run.data.image_shape),
                    log=lambda line: None)
    report = json.loads(invoke("eval", run.directory, "--json", "--metrics", "continuous-codes").stdout)
    for measure in ("slant", "width", "height", "mass"):
        assert -1 <= report[f"tilt/rho_{measure}"] <= 1
    assert 0 < report["tilt/kept"] <= 1
    assert report["provenance"]["continuous-codes/tilt"]["strongest"] in ("slant", "width", "height", "mass")
    assert not any(key.startswith("shape/rho") for key in report)  # categorical codes are not swept


def test_mig_is_1_for_the_true_factors_and_near_0_for_noise():
    from ganforge_plugins.metrics.disentanglement import discretise, mutual_information_gap

    rng = torch.Generator().manual_seed(0)
    factors = {"shape": torch.randint(0, 3, (4000,), generator=rng), "x": torch.randint(0, 16, (4000,), generator=rng)}
    score, gaps, tracked = mutual_information_gap(dict(factors), factors)
    # 1 up to the small positive bias of mutual information estimated between independent samples.
    assert score == pytest.approx(1.0, abs=0.01) and tracked == {"shape": "shape", "x": "x"}
    noise = {"a": discretise(torch.randn(4000, generator=rng)), "b": discretise(torch.rand(4000, generator=rng))}
    assert mutual_information_gap(noise, factors)[0] < 0.02
    mixed = {"a": factors["x"] // 2, "b": factors["x"] // 2}  # x carried twice: no gap
    assert mutual_information_gap(mixed, factors)[1]["x"] == pytest.approx(0.0, abs=1e-9)


def test_factorvae_score_is_1_for_the_true_factors_and_about_chance_for_noise():
    from ganforge_plugins.metrics.disentanglement import factorvae_score
    from ganforge_plugins.data.shapes import generate_shapes

    factors = generate_shapes(4000, seed=3).labels  # the five factors of 4,000 sprites
    rng = torch.Generator().manual_seed(0)
    truth = torch.stack([values.double() for values in factors.values()], dim=1)
    score, per_factor = factorvae_score(truth, factors, rng)
    assert score == 1.0 and set(per_factor.values()) == {1.0}
    # Scaled: a factor with a wide grid does not win by its units.
    assert factorvae_score(truth * torch.tensor([1.0, 100, 0.01, 7, 1]), factors, rng)[0] == 1.0
    noise = torch.randn(4000, 5, generator=rng, dtype=torch.float64)
    assert factorvae_score(noise, factors, rng)[0] < 0.4  # chance is 1/5
    # Two factors on one dimension, the others lost: that dimension serves one of them at most.
    merged = torch.stack([factors["pos_x"] * 32.0 + factors["pos_y"], torch.randn(4000, generator=rng, dtype=torch.float64)], 1)
    assert factorvae_score(merged, factors, rng)[0] < 0.5


def test_mig_on_a_shapes_run_names_the_factor_each_code_tracks(tmp_path):
    codes = {"codes": [*INFOGAN["codes"], {"name": "tilt", "dist": "uniform", "size": 1, "weight": 0.1}],
             "traverse_every_sample": False}
    run = run_tiny(tmp_path, plugins={"infogan": codes})
    report = json.loads(invoke("eval", run.directory, "--json", "--metrics", "mig,factorvae").stdout)
    assert 0 <= report["mig"] <= 1 and {"mig/shape", "mig/rotation", "mig/pos_x"} <= set(report)
    assert "shape -> " in report["provenance"]["mig"]["tracked"]
    assert 0 <= report["factorvae"] <= 1 and {"factorvae/shape", "factorvae/pos_y"} <= set(report)
    assert report["provenance"]["factorvae"]["dimensions"] == "shape, tilt"  # every code Q reads


# -- Inception-v3 from the user's weights file ------------------------------------------------------


@pytest.fixture(scope="module")
def untrained_inception_weights(tmp_path_factory):
    """A file in the layout of torch-fidelity's Inception-v3 weights, with untrained values: the
    real file cannot be downloaded here, and its checksum must fail to match."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Untrained(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Untrained("inception", ["2048"], feature_extractor_weights_path=str(folder / "empty.pth"))
    torch.save(net.state_dict(), folder / "weights.pth")
    return folder / "weights.pth"


def test_inception_features_need_the_known_weights_and_say_how_to_get_them(tmp_path, monkeypatch,
                                                                             untrained_inception_weights):
    from ganforge import inception

    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    run = run_tiny(tmp_path)
    missing = invoke("eval", run.directory, "--evaluator", "inception", "--metrics", "fid")
    assert_one_line_cli_error(missing, 2, inception.WEIGHTS_FILE, inception.WEIGHTS_URL, "--inception-weights",
                              inception.WEIGHTS_ENV, "downloads nothing")
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    assert_one_line_cli_error(invoke("eval", run.directory, "--evaluator", "inception", "--metrics", "fid"), 2,
                              "no Inception-v3 weights file at", inception.WEIGHTS_ENV)
    # A file of the right layout but other values: refused by its checksum, before it is read.
    wrong = invoke("eval", run.directory, "--evaluator", "inception", "--metrics", "fid",
                   "--inception-weights", untrained_inception_weights)
    assert_one_line_cli_error(wrong, 2, "is not the Inception-v3 weights FID is defined with",
                              inception.WEIGHTS_SHA256[:16])


def test_inception_features_feed_fid_with_their_provenance(tmp_path, monkeypatch, untrained_inception_weights):
    from ganforge import inception
    from ganforge.evaluator import sha256_of

    # Accept the untrained file's checksum here: what is tested is the path from weights to scores.
    digest = sha256_of(untrained_inception_weights)
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", digest)
    monkeypatch.setattr(inception.InceptionFeatures.__init__, "__defaults__", (digest,))
    features = inception.InceptionFeatures(untrained_inception_weights)
    grey = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    out = features.features(grey)
    assert out.shape == (3, 2048) and torch.isfinite(out).all()
    assert torch.equal(out, features.features(grey.expand(-1, 3, -1, -1)))  # grey is three equal channels
    assert torch.allclose(out, features.features(grey.float() / 127.5 - 1), atol=1e-5)  # [-1, 1] floats alike
    between_levels = grey.float().add(0.4) / 127.5 - 1  # generated-like floats: rounded to the same levels first
    assert torch.equal(features.features(between_levels), out)
    run = run_tiny(tmp_path)
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(untrained_inception_weights))
    settings = EvalSettings(n=24, evaluator_path=Path("inception"))  # few images: 299 px on a CPU is slow
    results, _, _ = evaluate_run(run.directory, metrics=["fid"], settings=settings, host=make_host())
    assert results["fid"] > 0
    facts = settings.provenance["fid"]
    assert facts["feature_sha256"] == digest and facts["layer"] == "pool3-2048" and facts["real_images"] == 24
    assert facts["preparation"] == inception.PREPARATION
    assert "24 images in 2048 features" in facts["warning"] and settings.warnings == [facts["warning"]]
