"""The recipe's ``[eval]`` table: metrics while training, ``best.pt``, resume; and the TensorBoard
plugin that writes every logged record through ``ganforge_log``."""

from __future__ import annotations

import sys

import pytest

from ganforge import hookimpl
from ganforge.checkpoint import load_checkpoint
from ganforge.errors import PluginError, RecipeError

from .conftest import assert_same_state, assert_one_line_cli_error, invoke, make_host, metric_records, run_tiny, tiny_recipe, write_recipe

CODES = {"codes": [{"name": "shape", "dist": "categorical", "size": 4}, {"name": "x", "dist": "uniform", "size": 1}]}
EIGHT_STEPS = {"steps": 8, "log_every": 2, "sample_every": 4, "checkpoint_every": 4, "keep_checkpoints": 2}
SCORED = {"every": 2, "n": 100, "metrics": ["categorical-clustering", "mig"], "best": "mig"}


def scored_run(tmp_path, resume=False, host=None, train=EIGHT_STEPS, **eval_keys):
    return run_tiny(tmp_path, host=host, resume=resume, train=train, plugins={"infogan": CODES},
                    eval={**SCORED, **eval_keys})


def eval_records(directory):
    """The scored records, without the wall-clock field."""
    return [{k: v for k, v in record.items() if k != "eval_seconds"} for record in metric_records(directory)
            if "eval/mig" in record]


def checkpoints(directory):
    return directory / "checkpoints"


def test_eval_every_scores_the_run_into_metrics_jsonl_and_keeps_the_best_step(tmp_path):
    run = scored_run(tmp_path)
    records = eval_records(run.directory)
    # A sanity score before the first step, then every 2 steps.
    assert [record["step"] for record in records] == [0, 2, 4, 6, 8]
    assert all({"eval/shape/accuracy", "eval/mig", "eval/mig/pos_x"} <= set(r) for r in records)
    assert all(record["eval_seconds"] > 0 for record in metric_records(run.directory) if "eval/mig" in record)
    scored = records[1:]  # the untrained generator is never "best"
    best = max(scored, key=lambda record: record["eval/mig"])  # max() keeps the first of equals, as the run does
    kept = load_checkpoint(checkpoints(run.directory) / "best.pt")
    assert kept["step"] == best["step"]
    assert kept["eval_best"] == {"figure": "mig", "direction": "max", "value": best["eval/mig"], "step": best["step"]}
    # best.pt is a full checkpoint of that step: its generator is the one that step's periodic copy holds.
    if best["step"] in (4, 8):
        periodic = load_checkpoint(checkpoints(run.directory) / f"step_{best['step']:07d}.pt")
        assert_same_state(kept["generator"], periodic["generator"])
    # The report draws each scored figure over training.
    assert invoke("report", run.directory).exit_code == 0
    page = (run.directory / "report.html").read_text()
    assert "Metrics during training" in page and 'aria-label="mig"' in page and 'aria-label="shape/accuracy"' in page


def test_scoring_changes_nothing_that_is_trained(tmp_path):
    plain = run_tiny(tmp_path / "plain", train=EIGHT_STEPS, plugins={"infogan": CODES})
    scored = scored_run(tmp_path / "scored")
    a = load_checkpoint(checkpoints(plain.directory) / "last.pt")
    b = load_checkpoint(checkpoints(scored.directory) / "last.pt")
    for key in ("generator", "discriminator", "optimizer_g", "optimizer_d", "rng", "data_order", "plugins"):
        assert_same_state(a[key], b[key], key)
    training = [r for r in metric_records(scored.directory) if "eval/mig" not in r]
    assert training == metric_records(plain.directory)


def test_the_best_figure_survives_resume(tmp_path):
    straight = scored_run(tmp_path / "straight")
    half = dict(EIGHT_STEPS, steps=4)
    scored_run(tmp_path / "resumed", train=half)
    resumed = scored_run(tmp_path / "resumed", resume=True)
    assert eval_records(resumed.directory) == eval_records(straight.directory)
    a = load_checkpoint(checkpoints(straight.directory) / "best.pt")
    b = load_checkpoint(checkpoints(resumed.directory) / "best.pt")
    assert a["eval_best"] == b["eval_best"]
    assert_same_state(a["generator"], b["generator"])
    assert load_checkpoint(checkpoints(resumed.directory) / "last.pt")["eval_best"] == a["eval_best"]


def test_lower_is_better_for_distances_and_a_stated_direction_wins(tmp_path):
    from ganforge.scoring import direction_of

    assert direction_of("fid", "auto") == "min" and direction_of("kid", "auto") == "min"
    assert direction_of("digit/accuracy", "auto") == "max" and direction_of("mig", "min") == "min"
    run = scored_run(tmp_path, direction="min")
    best = min(eval_records(run.directory)[1:], key=lambda record: record["eval/mig"])
    assert load_checkpoint(checkpoints(run.directory) / "best.pt")["eval_best"]["value"] == best["eval/mig"]


def test_eval_mistakes_are_one_line_recipe_errors_before_training(tmp_path):
    recipe = tiny_recipe(tmp_path / "runs", plugins={"infogan": CODES}, eval=dict(SCORED, best="mgi"))
    path = write_recipe(tmp_path / "typo.toml", recipe)
    result = invoke("run", path)
    line = assert_one_line_cli_error(result, 2, "eval.best", "'mgi' is not a figure of the chosen metrics",
                                     "mig/shape")
    assert "removed" in line and not (tmp_path / "runs" / "tiny").exists()  # failed at the step-0 score
    recipe["eval"] = {"best": "mig"}
    assert_one_line_cli_error(invoke("check", write_recipe(tmp_path / "b.toml", recipe)), 2, "eval.best",
                              "set eval.every too")
    recipe["eval"] = {"every": 2, "metrics": ["fid", "mgi"]}
    assert_one_line_cli_error(invoke("check", write_recipe(tmp_path / "c.toml", recipe)), 2, "eval.metrics[1]",
                              "did you mean 'mig'")


def test_a_metric_needing_a_missing_feature_network_stops_the_run_at_step_0(tmp_path):
    recipe = tiny_recipe(tmp_path / "runs", eval={"every": 2, "metrics": ["fid"], "n": 100})
    result = invoke("run", write_recipe(tmp_path / "fid.toml", recipe))
    assert_one_line_cli_error(result, 2, "no feature network for shapes 1x28x28", "ganforge evaluator train --data shapes")


# -- TensorBoard ---------------------------------------------------------------------------------


def event_tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


class RecordsSeen:
    def __init__(self):
        self.records = []

    @hookimpl
    def ganforge_log(self, step, record):
        self.records.append((step, dict(record)))


def test_ganforge_log_receives_every_metrics_jsonl_record(tmp_path):
    seen = RecordsSeen()
    run = scored_run(tmp_path, host=make_host(("seen", seen)))
    written = metric_records(run.directory)
    assert [step for step, _ in seen.records] == [record["step"] for record in written]
    for (_, record), stored in zip(seen.records, written):
        assert {k: v for k, v in record.items() if k != "images_per_s"} == stored


def test_tensorboard_has_every_loss_metric_sample_and_traversal_under_the_usual_tags(tmp_path):
    run = run_tiny(tmp_path, train=EIGHT_STEPS, plugins={"infogan": CODES, "tensorboard": {}}, eval=SCORED)
    events = event_tags(run.directory / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    assert {"loss/D/total", "loss/G/total", "loss/G/info/shape", "loss/D/info/x", "speed/images_per_s",
            "eval/mig", "eval/shape/accuracy", "speed/eval_seconds"} <= scalars
    assert [event.step for event in events.Scalars("loss/G/total")] == [2, 4, 6, 8]
    assert [event.step for event in events.Scalars("eval/mig")] == [0, 2, 4, 6, 8]
    logged = {r["step"]: r["loss/G/total"] for r in metric_records(run.directory) if "loss/G/total" in r}
    assert [pytest.approx(event.value) for event in events.Scalars("loss/G/total")] == list(logged.values())
    assert {"samples", "traversal/shape", "traversal/x"} <= set(events.Tags()["images"])
    assert [image.step for image in events.Images("samples")] == [4, 8]
    traversal = events.Images("traversal/shape")[-1]
    assert (traversal.width, traversal.height) == (4 * 29 + 1, 10 * 29 + 1)  # 4 categories by 10 rows of 28 px


class FailAt:
    def __init__(self, step):
        self.step = step

    @hookimpl
    def ganforge_step_end(self, step):
        if step == self.step:
            raise RuntimeError("a failure after step 6 was logged")


def test_tensorboard_after_resume_shows_one_history(tmp_path):
    sections = {"plugins": {"infogan": CODES, "tensorboard": {}}}
    with pytest.raises(PluginError):
        run_tiny(tmp_path, host=make_host(("fail", FailAt(7))), train=EIGHT_STEPS, **sections)
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt")["step"] == 4
    run = run_tiny(tmp_path, train=EIGHT_STEPS, resume=True, **sections)
    events = event_tags(run.directory / "tensorboard").Scalars("loss/G/total")
    # Step 6 was logged by the failed attempt, after the step-4 checkpoint: purged, then logged again once.
    assert [event.step for event in events] == [2, 4, 6, 8]
    logged = [r["loss/G/total"] for r in metric_records(run.directory) if "loss/G/total" in r]
    assert [event.value for event in events] == [pytest.approx(value) for value in logged]


def test_tensorboard_without_its_package_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    recipe = tiny_recipe(tmp_path / "runs", plugins={"tensorboard": {}})
    result = invoke("check", write_recipe(tmp_path / "tb.toml", recipe))
    assert_one_line_cli_error(result, 2, "plugins.tensorboard", "pip install 'ganforge[tensorboard]'")
    with pytest.raises(RecipeError):
        from ganforge_plugins.training.tensorboard import summary_writer_class

        summary_writer_class()
