"""The Inception Score (and the same formula with the dataset's own classifier) and intra-class FID.

References, read at these commits:
- openai/improved-gan@4f5d1ec5c16a7eceb206f42bfc652693601e1d5c ``inception_score/model.py``:
  ``get_inception_score`` (10 splits ``i * N // splits``; per split the mean over images of
  ``sum(p * (log p - log mean(p)))``, then ``exp``; ``np.mean`` and ``np.std`` of the splits), and
  the softmax taken of ``pool_3`` times ``softmax/logits/MatMul``'s weights, without the bias.
- toshas/torch-fidelity@2e5d88dcd8f374602fc68be872e3d0aee11913e3 (v0.4.0, the version installed)
  ``torch_fidelity/metric_isc.py`` ``isc_features_to_metric`` (the same in float64, the images
  first shuffled by ``np.random.RandomState(2020).permutation``) and
  ``feature_extractor_inceptionv3.py`` (``logits_unbiased``: ``x.mm(self.fc.weight.T)``).
- POSTECH-CVLab/PyTorch-StudioGAN@947b35e9835b67860fdce44d337f6d7fee7c8db3 ``src/worker.py``
  ``calculate_intra_class_fid``: per class, the FID of the class's real images against as many
  generated for the class; the plain mean over classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ganforge import inception
from ganforge.errors import UsageError
from ganforge.evaluation import EvalSettings
from ganforge.evaluator import EvaluatorError, load_evaluator, sha256_of, train_evaluator
from ganforge.launch import evaluate_run
from ganforge_plugins.metrics.quality import SCORE_SPLITS, frechet_distance, inception_score

from .conftest import assert_one_line_cli_error, invoke, make_host, run_tiny
from .test_evaluation import untrained_inception_weights  # noqa: F401  (a fixture)
from .tolerance import ROUNDING_MARGIN, assert_close_to_rounding

CLASSES = 4  # shapes: four sprite shapes
HOLDOUT = 6  # too few for every class to have two held-out images: some class is left out
FLOAT64_EPS = torch.finfo(torch.float64).eps


def improved_gan_score(probabilities: np.ndarray, splits: int = SCORE_SPLITS) -> tuple[float, float]:
    """openai/improved-gan's get_inception_score after its softmax, transcribed in float64 numpy."""
    scores = []
    for i in range(splits):
        part = probabilities[(i * probabilities.shape[0] // splits):((i + 1) * probabilities.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def reference_score(logits: torch.Tensor) -> tuple[float, float]:
    """The reference on logits: softmax in float64, the images in torch-fidelity's shuffled order."""
    order = np.random.RandomState(2020).permutation(len(logits))
    return improved_gan_score(logits.double().softmax(dim=1).numpy()[order])


def float64_rounding(scale: float, terms: int) -> float:
    """tests/tolerance.py's bound for float64 arithmetic: the two computations are float64 throughout."""
    return ROUNDING_MARGIN * FLOAT64_EPS * math.sqrt(terms) * scale


# -- the score's arithmetic ------------------------------------------------------------------------


def test_the_inception_score_is_1_for_uniform_predictions_and_k_for_one_hot_ones_over_k_classes():
    mean, std = inception_score(torch.zeros(200, 7))  # every image predicts every class alike
    # KL of p from itself: log p - log mean(p) is 0 up to the rounding of the mean of 20 values.
    assert mean == pytest.approx(1.0, abs=float64_rounding(1.0, 20 + 7)) and std <= float64_rounding(1.0, 20 + 7)
    # One-hot predictions, each split holding K classes equally often after torch-fidelity's shuffle:
    # KL = log K for every image, so every split scores exactly K.
    k, n = 5, 200
    balanced = F.one_hot(torch.arange(n) % k, k).double() * 1000  # exp(-1000) is 0: p is one-hot in float64
    shuffled = torch.as_tensor(np.random.RandomState(2020).permutation(n))
    logits = torch.empty_like(balanced)
    logits[shuffled] = balanced  # so that logits[shuffled], what is split, is the balanced order
    mean, std = inception_score(logits)
    assert mean == pytest.approx(k, abs=float64_rounding(k, 20 + k)) and std <= float64_rounding(k, 20 + k)
    # Given in the balanced order, the shuffle unbalances the splits, and they score less.
    assert inception_score(balanced)[0] < k
    with pytest.raises(UsageError, match="into 10 parts; 9 are too few"):
        inception_score(torch.zeros(9, 3))


def test_the_inception_score_is_improved_gan_s_formula_in_float64_on_random_probabilities():
    rng = torch.Generator().manual_seed(0)
    probabilities = (3 * torch.randn(1003, 17, generator=rng, dtype=torch.float64)).softmax(dim=1)  # 1003: uneven splits
    mean, std = inception_score(probabilities.log())  # softmax(log p) is p, up to rounding
    order = np.random.RandomState(2020).permutation(1003)  # torch-fidelity's shuffle before the splits
    expected_mean, expected_std = improved_gan_score(probabilities.numpy()[order])
    terms = 17 + 1003 // 10 + 17  # the softmax's sum, a split's mean, the KL's sum over classes
    assert mean == pytest.approx(expected_mean, abs=float64_rounding(expected_mean, terms))
    # The population std of the splits (np.std), which torchmetrics' sample std would exceed by 5%.
    assert std == pytest.approx(expected_std, abs=float64_rounding(expected_mean, terms))
    assert 1 < mean < 17 and std > 0


def test_lower_is_better_for_intra_class_fid_and_its_classes_higher_for_the_scores():
    from ganforge.scoring import direction_of

    assert direction_of("intra_fid", "auto") == "min" and direction_of("intra_fid/3", "auto") == "min"
    assert direction_of("ema/fid", "auto") == "min" and direction_of("class_accuracy/3", "auto") == "max"
    assert direction_of("inception_score", "auto") == "max" and direction_of("classifier_score", "auto") == "max"


# -- on a tiny conditional run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("conditional"), plugins={"conditional": {"classes": CLASSES}},
                    data={"holdout": HOLDOUT})


@pytest.fixture(scope="module")
def sprite_network(conditional_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("network") / "shapes.pt"
    train_evaluator(conditional_run.data, "shapes", "train", 50, epochs=1, out=path, log=lambda line: None)
    return path


def scored(run, metrics, network, n, part="train"):
    settings = EvalSettings(n=n)
    settings._evaluator = load_evaluator(network) if isinstance(network, Path) else network
    results, loaded, data = evaluate_run(run.directory, metrics=metrics, part=part, settings=settings, host=make_host())
    return results, settings, loaded, data


def test_intra_fid_is_the_mean_of_each_class_s_fid_against_as_many_fakes_generated_for_it(conditional_run,
                                                                                          sprite_network):
    results, settings, run, data = scored(conditional_run, ["intra-fid"], sprite_network, n=100)
    network = settings.evaluator()
    expected = {}
    for k in range(CLASSES):  # n = 100 is more than any class holds: every real image of the class
        real = network.features(data.images[data.labels["shape"] == k])
        label = F.one_hot(torch.full((len(real),), k), CLASSES).float()
        fake = network.features(settings.generated_images(run, len(real), {"label": label}))
        expected[k] = frechet_distance(real, fake)
        assert results[f"intra_fid/{k}"] == expected[k], k  # the same features, the same FID
    assert results["intra_fid"] == pytest.approx(sum(expected.values()) / CLASSES, rel=4 * FLOAT64_EPS)
    assert set(results) == {"intra_fid", *(f"intra_fid/{k}" for k in range(CLASSES))}
    facts = settings.provenance["intra-fid"]
    counts = {str(k): int((data.labels["shape"] == k).sum()) for k in range(CLASSES)}
    assert facts["real_images_per_class"] == facts["generated_images_per_class"] == counts
    assert facts["real_images"] == len(data) == 256 - HOLDOUT and facts["classes_left_out"] == []
    # Fewer images asked for than a class holds: that many of it, chosen by the seed.
    capped = scored(conditional_run, ["intra-fid"], sprite_network, n=20)[1].provenance["intra-fid"]
    assert capped["real_images_per_class"] == {str(k): 20 for k in range(CLASSES)}


def test_a_class_with_fewer_than_two_real_images_is_left_out_and_named(conditional_run, sprite_network):
    results, settings, _, data = scored(conditional_run, ["intra-fid"], sprite_network, n=100, part="holdout")
    counts = torch.bincount(data.labels["shape"], minlength=CLASSES)
    left_out = [k for k in range(CLASSES) if counts[k] < 2]
    assert len(data) == HOLDOUT and left_out  # six images cannot give four classes two each
    facts = settings.provenance["intra-fid"]
    assert facts["classes_left_out"] == left_out and facts["classes"] == CLASSES - len(left_out)
    kept = [k for k in range(CLASSES) if k not in left_out]
    assert set(results) == {"intra_fid", *(f"intra_fid/{k}" for k in kept)}
    assert results["intra_fid"] == pytest.approx(sum(results[f"intra_fid/{k}"] for k in kept) / len(kept),
                                                 rel=4 * FLOAT64_EPS)
    assert facts["warning"].startswith(f"intra-class FID, class {min(kept, key=lambda k: counts[k])} (the smallest),"
                                       f" from {int(counts[kept].min())} images in 128 features")


def test_classifier_score_is_the_formula_on_the_own_network_s_logits_of_the_generated_images(conditional_run,
                                                                                             sprite_network):
    results, settings, run, _ = scored(conditional_run, ["classifier-score"], sprite_network, n=100)
    logits = settings.evaluator().class_logits(settings.generated_images(run, 100))
    assert logits.shape == (100, CLASSES)
    expected_mean, expected_std = reference_score(logits)
    terms = CLASSES + 10 + CLASSES
    assert results["classifier_score"] == pytest.approx(expected_mean, abs=float64_rounding(expected_mean, terms))
    assert results["classifier_score_std"] == pytest.approx(expected_std, abs=float64_rounding(expected_mean, terms))
    assert 1 <= results["classifier_score"] <= CLASSES  # exp of a KL bounded by log K
    facts = settings.provenance["classifier-score"]
    assert facts["layer"].startswith(f"classifier-{CLASSES}") and facts["splits"] == 10
    assert facts["generated_images"] == 100 and "torch-fidelity" in facts["library"]


def test_eval_json_gives_per_class_figures_and_counts_and_warns_about_small_classes(conditional_run, sprite_network):
    result = invoke("eval", conditional_run.directory, "--json", "--metrics", "intra-fid,classifier-score",
                    "--evaluator", sprite_network, "--n", "100")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    figures = {"intra_fid", *(f"intra_fid/{k}" for k in range(CLASSES)), "classifier_score", "classifier_score_std"}
    assert figures <= set(report) and all(isinstance(report[name], float) for name in figures)
    facts = report["provenance"]["intra-fid"]
    assert set(facts["real_images_per_class"]) == {str(k) for k in range(CLASSES)}
    assert sum(facts["generated_images_per_class"].values()) == facts["generated_images"] == 256 - HOLDOUT
    assert f"warning: {facts['warning']}" in result.stderr.splitlines()  # every class is under 129 images
    assert "per class: ganforge eval --n" in facts["warning"]
    table = invoke("eval", conditional_run.directory, "--metrics", "intra-fid", "--evaluator", sprite_network)
    assert table.exit_code == 0 and "intra_fid/3" in table.stdout and "real_images_per_class" in table.stdout


def test_what_does_not_apply_is_a_one_line_error_when_asked_for_and_left_out_otherwise(tmp_path, sprite_network):
    plain = run_tiny(tmp_path)
    assert_one_line_cli_error(invoke("eval", plain.directory, "--metrics", "intra-fid", "--evaluator", sprite_network),
                              2, "--metrics intra-fid: the run's generator takes no class label (its inputs: z)",
                              "[plugins.conditional]")
    everything = invoke("eval", plain.directory, "--json", "--evaluator", sprite_network, "--n", "100")
    assert everything.exit_code == 0, everything.stderr
    assert "intra_fid" not in json.loads(everything.stdout) and "intra-fid" not in everything.stderr
    # The score each network gives, and the other network's refused, by name or with a note.
    assert "classifier_score" in json.loads(everything.stdout)
    assert "note: inception-score skipped: the Inception Score needs Inception-v3" in everything.stderr
    assert_one_line_cli_error(invoke("eval", plain.directory, "--metrics", "inception-score", "--evaluator",
                                     sprite_network), 2, "needs Inception-v3's ImageNet classifier",
                              "--evaluator inception", "classifier-score")


# -- from the Inception-v3 weights file -------------------------------------------------------------


@pytest.fixture
def accepted_inception(untrained_inception_weights):  # noqa: F811
    """The untrained file accepted by its checksum for the test: what is tested is the path from
    the weights to the scores (the real file cannot be downloaded here)."""
    return inception.InceptionFeatures(untrained_inception_weights, sha256_of(untrained_inception_weights))


def test_the_inception_score_reads_the_weights_file_s_fc_layer_without_its_bias(accepted_inception,
                                                                                untrained_inception_weights):  # noqa: F811
    state = torch.load(untrained_inception_weights, weights_only=True)
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].abs().sum() > 0
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    logits = accepted_inception.class_logits(grey)
    expected = accepted_inception.features(grey) @ state["fc.weight"].T
    assert_close_to_rounding(logits, expected, terms=2048, what="pool3 x fc.weight")  # a 2,048-long product
    assert not torch.allclose(logits, expected + state["fc.bias"], atol=1e-3)


def test_the_inception_score_comes_from_inception_s_logits_of_the_generated_images(conditional_run,
                                                                                  accepted_inception):
    captured = []
    accepted_inception.net.register_forward_hook(lambda module, inputs, outputs: captured.append(outputs[1]))
    results, settings, _, _ = scored(conditional_run, ["inception-score"], accepted_inception, n=10)  # 299 px: slow
    assert torch.cat(captured).shape == (10, 1008)
    expected_mean, expected_std = reference_score(torch.cat(captured))
    terms = 1008 + 1 + 1008
    assert results["inception_score"] == pytest.approx(expected_mean, abs=float64_rounding(expected_mean, terms))
    assert results["inception_score_std"] == pytest.approx(expected_std, abs=float64_rounding(expected_mean, terms))
    facts = settings.provenance["inception-score"]
    assert facts["layer"].startswith(inception.LOGITS_LAYER) and facts["generated_images"] == 10
    assert facts["feature_sha256"] == accepted_inception.sha256
    with pytest.raises(EvaluatorError, match="with Inception-v3 the same formula is inception-score"):
        scored(conditional_run, ["classifier-score"], accepted_inception, n=100)
    # Intra-class FID reads Inception's pooled features as FID does (tests/test_evaluation.py runs
    # that path); it is not run here: each FID in 2,048 features takes 10 to 30 s on this CPU.
