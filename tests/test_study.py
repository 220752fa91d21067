"""Several student settings in one config: validation, shared labels, one table and one plot."""

import json
from functools import partial
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.config import Config, load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.pipeline import LockedError, run_lock, run_pipeline
from distill.study.folders import SHARED_STAGES, link_shared_stages, shared_stages
from distill.study.report import study_markdown
from helpers import DEMO_INPUTS, study_config, write_config


def test_variants_override_the_student_and_are_validated(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS, variants={"r4": {"lora": {"r": 4}, "epochs": 3}})
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    variant = loaded.variant("r4")
    assert (variant.student.lora.r, variant.student.lora.alpha, variant.student.epochs) == (4, 16, 3)
    assert variant.variants == {} and variant.teacher == loaded.teacher

    config["variants"] = {"bad": {"lora": {"rank": 4}}}
    with pytest.raises(UserError, match=r"c.yaml: variants: variant 'bad' overrides student with lora.rank"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["variants"] = {"bad": {"filter": {"min_logprob": 0.5}}}
    with pytest.raises(UserError, match=r"variant 'bad' overrides filter with min_logprob: .*less than or equal"):
        load_config(write_config(tmp_path / "c.yaml", config))

    # A variant is trained and served like the main student, so the same cross-section rules apply to it.
    config["variants"] = {"kd": {"distill_weight": 0.5}}
    config["teacher"]["top_logprobs"] = 0
    with pytest.raises(UserError, match=r"variants.kd.distill_weight needs the teacher's top-k"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["teacher"]["top_logprobs"] = 5
    config["variants"] = {"dora": {"lora": {"use_dora": True}}}
    with pytest.raises(UserError, match=r"variants.dora.lora.use_dora: vLLM cannot load DoRA"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_a_filter_variant_filters_the_same_labels_its_own_way(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS, variants={"confident": {"filter": {"min_logprob": -0.5}, "epochs": 2},
                                                       "r4": {"lora": {"r": 4}}})
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    confident = loaded.variant("confident")
    assert (confident.filter.min_logprob, confident.student.epochs) == (-0.5, 2)
    assert confident.filter.eval_fraction == loaded.filter.eval_fraction  # the other filter keys stay the main's
    assert shared_stages(loaded, confident) == ("generate",)
    assert shared_stages(loaded, loaded.variant("r4")) == SHARED_STAGES

    config["variants"] = {"same": {"filter": {}}, "main-like": {"filter": {"eval_fraction": 0.1}}}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    assert all(shared_stages(loaded, loaded.variant(name)) == SHARED_STAGES for name in ("same", "main-like"))
    config["variants"] = {"odd": {"filter": 5}}
    with pytest.raises(UserError, match=r"variant 'odd': `filter` must map keys of `filter` to values"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["variants"] = {"typo": {"filter": {"min_logprobs": -1}}}
    with pytest.raises(UserError, match=r"variant 'typo' overrides filter with min_logprobs"):
        load_config(write_config(tmp_path / "c.yaml", config))

    config["task"] = {**config["task"], "multi_label": True}
    config["variants"] = {"capped": {"filter": {"max_per_label": 5}}}
    with pytest.raises(UserError, match=r"variants.capped.filter.max_per_label: caps apply to single-label"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_a_variant_may_make_its_labels_another_way(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS, variants={"sc3": {"teacher": {"samples": 3, "temperature": 0.7},
                                                              "filter": {"min_vote_share": 0.6}}})
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    sc3 = loaded.variant("sc3")
    assert (sc3.teacher.samples, sc3.teacher.temperature, sc3.filter.min_vote_share) == (3, 0.7, 0.6)
    assert sc3.teacher.model == loaded.teacher.model and sc3.student == loaded.student
    assert shared_stages(loaded, sc3) == ()  # labelled again, in a generate folder of its own

    config["variants"] = {"other": {"teacher": {"model": "another"}}}
    with pytest.raises(UserError, match=r"variant 'other' overrides teacher.model: a variant may change only "
                                        r"teacher.samples and teacher.temperature"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["variants"] = {"greedy": {"teacher": {"samples": 3}}}
    with pytest.raises(UserError, match=r"variant 'greedy' overrides teacher with teacher: samples > 1 needs "
                                        r"temperature"):
        load_config(write_config(tmp_path / "c.yaml", config))
    config["variants"] = {"votes": {"filter": {"min_vote_share": 0.6}}}  # but one answer per input
    with pytest.raises(UserError, match=r"variants.votes.filter.min_vote_share: one answer per input has no vote "
                                        r"share .* set variants.votes.teacher.samples above 1"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_a_variant_that_labels_again_shares_the_main_cache(tmp_path: Path) -> None:
    for stage in ("generate", "filter"):
        (tmp_path / stage).mkdir()
    (tmp_path / "generate" / "cache.sqlite").write_text("answers")
    variant = RunLayout(tmp_path).variant("sc3")
    link_shared_stages(variant)  # first without a teacher override
    link_shared_stages(variant, shared=())  # then with one
    assert not variant.stage_dir("generate").is_symlink() and not variant.stage_dir("filter").is_symlink()
    assert variant.generate.cache.is_symlink() and variant.generate.cache.read_text() == "answers"
    variant.generate.outputs.write_text("labels made through the main cache")

    link_shared_stages(variant)  # the override removed: its answers are in the main cache, so its folder goes
    assert variant.stage_dir("generate").is_symlink() and variant.stage_dir("filter").is_symlink()
    assert (tmp_path / "generate" / "cache.sqlite").read_text() == "answers"


def test_every_variant_is_compared_with_one_greedy_teacher(tmp_path: Path) -> None:
    from distill.compare.stage import TeacherAnswers
    from distill.tasks import make_task

    config = load_config(write_config(tmp_path / "c.yaml", study_config(
        "m", DEMO_INPUTS, variants={"sc3": {"teacher": {"samples": 3, "temperature": 0.7}}})))
    texts = ["my card was charged twice", "where is my parcel"]
    main, sc3 = (TeacherAnswers(c, make_task(c.task), RunLayout(tmp_path), texts)
                 for c in (config, config.variant("sc3")))
    assert sc3.keys == main.keys and sc3.requests == main.requests
    assert all(r["temperature"] == 0 and "n" not in r for r in sc3.requests)


def test_a_variant_folder_follows_its_filter_override(tmp_path: Path) -> None:
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "train.parquet").write_text("main")
    variant = RunLayout(tmp_path).variant("v")
    link_shared_stages(variant)
    assert variant.filter.train.read_text() == "main"
    link_shared_stages(variant, shared=("generate",))  # a filter override was added
    assert not variant.stage_dir("filter").exists() and variant.stage_dir("generate").is_symlink()
    variant.stage_dir("filter").mkdir()
    variant.filter.train.write_text("variant")
    link_shared_stages(variant)  # and removed again
    assert variant.stage_dir("filter").is_symlink() and variant.filter.train.read_text() == "main"
    assert (tmp_path / "filter" / "train.parquet").read_text() == "main"

    # A generate folder of its own holds paid labels: the study refuses to replace it.
    (tmp_path / "variants" / "w" / "generate").mkdir(parents=True)
    with pytest.raises(UserError, match=r"variants/w/generate: a generate folder of its own"):
        link_shared_stages(RunLayout(tmp_path).variant("w"))
    assert (tmp_path / "variants" / "w" / "generate").is_dir()


def test_a_variant_folder_in_use_is_not_switched(tmp_path: Path) -> None:
    """Folders are switched under the variant's run lock: a second study waits its turn instead of replacing
    the filter folder the first one is training from."""
    config = load_config(write_config(tmp_path / "c.yaml", study_config("smollm2-135m-instruct", DEMO_INPUTS)))
    variant = RunLayout(tmp_path / "run").variant("v")
    variant.stage_dir("filter").mkdir(parents=True)
    variant.filter.train.write_text("the variant's own rows")
    switch = partial(link_shared_stages, variant)
    with run_lock(variant), pytest.raises(LockedError):
        run_pipeline(config, variant, set_up=switch)
    assert not variant.stage_dir("filter").is_symlink()
    assert variant.filter.train.read_text() == "the variant's own rows"

    def switch_and_stop() -> None:  # the lock is held while the folders switch
        assert variant.lock_holder.exists()
        switch()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, variant, set_up=switch_and_stop)
    assert variant.stage_dir("filter").is_symlink() and not variant.lock_holder.exists()


def test_variant_folders_share_the_labels(tmp_path: Path) -> None:
    (tmp_path / "generate").mkdir()
    (tmp_path / "generate" / "outputs.parquet").write_text("x")
    variant = RunLayout(tmp_path).variant("r4")
    link_shared_stages(variant)
    link_shared_stages(variant)  # idempotent
    assert variant.generate.outputs.read_text() == "x" and variant.stage_dir("generate").is_symlink()


def test_study_markdown_lists_every_variant() -> None:
    row = {"variant": "main", "student_model": "s", "settings": "r=16", "train_rows": 1341, "served_as": "adapter",
           "verdict": "insufficient_evidence", "quality": 0.5, "quality_ci": [0.4, 0.6],
           "quality_diff_ci": [-0.2, 0.05], "agreement": 0.7, "agreement_ci": [0.62, 0.77], "queries_per_s": 9.0,
           "cost_per_1k_queries": 0.001, "break_even_queries": 1234.0}
    study = {"quality_name": "accuracy",
             "teacher": {"model": "t", "quality": 0.8, "concurrency": 16, "queries_per_s": 1.0,
                         "cost_per_1k_queries": 0.02},
             "variants": [row, {**row, "variant": "r4", "quality": None, "quality_ci": None}]}
    text = study_markdown(study, "demo")
    assert "| main | s | r=16 | 1,341 | adapter | insufficient_evidence | 0.500 [0.400, 0.600] | [-0.200, +0.050] | " \
           "0.700 [0.620, 0.770] | 9.00 | 0.00100 | 1,234 |" in text
    assert "| accuracy [95% CI] |" in text and "at 16 requests in flight" in text
    assert "| r4 |" in text and "n/a" in text


@pytest.mark.slow
def test_study_trains_each_variant_on_the_same_labels(tmp_path: Path, tiny_model: Path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    config = study_config(tiny_model, DEMO_INPUTS, variants={"r4": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
                                                             "few": {"filter": {"max_train_rows": 12}},
                                                             "sc3": {"teacher": {"samples": 3, "temperature": 1.0}}})
    config["compare"] = {"max_concurrency": 16, "prompt_baseline": False}
    path = write_config(tmp_path / "study.yaml", config)
    result = CliRunner().invoke(app, ["study", "-c", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    study = json.loads((run_dir / "study.json").read_text())
    assert [row["variant"] for row in study["variants"]] == ["main", "r4", "few", "sc3"]
    assert study["variants"][1]["settings"] == "r=4 alpha=8 epochs=1 lr=0.0003 lora.dropout=0.0"
    summary = json.loads((run_dir / "variants" / "r4" / "summary.json").read_text())
    assert [s["action"] for s in summary["stages"]] == ["skipped", "skipped", "ran", "ran"]
    # The filter variant filters the same labels itself: labelled once, its own training rows.
    few = run_dir / "variants" / "few"
    summary = json.loads((few / "summary.json").read_text())
    assert [s["action"] for s in summary["stages"]] == ["skipped", "ran", "ran", "ran"]
    assert (few / "generate").is_symlink() and not (few / "filter").is_symlink()
    assert len(read_rows(few / "filter" / "train.parquet")) == 12 == study["variants"][2]["train_rows"]
    assert study["variants"][0]["train_rows"] == len(read_rows(run_dir / "filter" / "train.parquet")) > 12
    assert study["variants"][2]["settings"].endswith("filter.max_train_rows=12")
    # Self-consistency labels: made again, three samples each, through the main run's cache; compared with
    # the same greedy teacher answers (from the cache, with the main run's timing: the teacher is not served).
    sc3 = run_dir / "variants" / "sc3"
    summary = json.loads((sc3 / "summary.json").read_text())
    assert [s["action"] for s in summary["stages"]] == ["ran", "ran", "ran", "ran"]
    assert not (sc3 / "generate").is_symlink() and (sc3 / "generate" / "cache.sqlite").is_symlink()
    assert {len(json.loads(row["samples"])) for row in read_rows(sc3 / "generate" / "outputs.parquet")} == {3}
    assert "teacher" not in json.loads((sc3 / "compare" / "manifest.json").read_text())["timings"]
    main_answers, sc3_answers = (read_rows(folder / "compare" / "answers.parquet") for folder in (run_dir, sc3))
    assert [r["teacher"] for r in main_answers] == [r["teacher"] for r in sc3_answers]
    adapter = json.loads((run_dir / "variants" / "r4" / "train" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4
    assert (run_dir / "study.html").read_text().count("data:image/png;base64,") == 1


def test_learning_curve_report_states_labels_needed_and_cost() -> None:
    from distill.study.curve import _fit
    from distill.study.report import curve_markdown

    # A teacher at 0.75 on 300 test queries; the student's paired difference rises past the bar.
    points = [{"labels": n, "quality": 0.75 + d, "quality_ci": [0.7 + d, 0.8 + d], "quality_diff": d,
               "quality_diff_ci": [d - 0.04, d + 0.04], "n_queries": 300, "agreement": None, "agreement_ci": None,
               "verdict": "keep_teacher", "against_gold": True}
              for n, d in ((250, -0.15), (500, -0.05), (1000, 0.02), (2000, 0.07))]
    fit = _fit(points, "quality_diff", bar=-0.02, per_label=0.01)
    assert fit is not None and fit["still_rising"] and fit["power"] == 0.8 and fit["test_queries"] == 300
    # Passing with 80% probability asks the mean (z_0.975 + z_0.8) standard errors above the bar.
    assert fit["target"] == pytest.approx(-0.02 + 2.8016 * 0.04 / 1.96, abs=1e-3)
    needed = fit["labels_needed"]
    assert 500 < needed["median"] < 2000 and needed["low"] <= needed["median"]
    assert fit["labelling_cost"]["median"] == pytest.approx(needed["median"] * 0.01)
    assert fit["min_test_queries"] is not None and fit["min_test_queries"] < 300
    curve = {"points": points, "quality": fit, "agreement": _fit(points, "agreement", 0.95, 0.01)}
    text = curve_markdown(curve, "accuracy")
    assert "| 2,000 | 0.820 [0.770, 0.870] |" in text
    assert "say distil with 80% probability on 300 test queries" in text and "still rising" in text
    assert "agreement: not measured at any point" in text


def test_a_learning_curve_without_gold_says_so_and_fits_agreement_alone() -> None:
    """No gold: the quality line names the missing gold (not too few points), and agreement is what is counted."""
    from distill.study.curve import _fit
    from distill.study.report import curve_markdown

    points = [{"labels": n, "quality": None, "quality_ci": None, "quality_diff": None, "quality_diff_ci": None,
               "n_queries": 48, "agreement": a, "agreement_ci": [a - 0.1, min(a + 0.1, 1.0)],
               "verdict": "keep_teacher", "against_gold": False} for n, a in ((16, 0.6), (64, 0.8))]
    curve = {"points": points, "quality": _fit(points, "quality_diff", -0.02, None),
             "agreement": _fit(points, "agreement", 0.95, None)}
    text = curve_markdown(curve, "accuracy")
    assert ("- accuracy, student - teacher: not measured: the test queries have no gold answers (data.gold_column), "
            "so the rule decides on agreement with the teacher.") in text
    assert "- agreement: too few points to fit (2 measured; three or more are needed)." in text


def test_a_study_is_rendered_apart_from_its_run(tmp_path: Path) -> None:
    """study.md and study.html come from the study's results alone: the table, the learning curve and one plot
    of each, with no run of any stage."""
    from distill.study.curve import _fit
    from distill.study.report import write_study_report

    points = [{"labels": n, "quality": 0.75 + d, "quality_ci": [0.7 + d, 0.8 + d], "quality_diff": d,
               "quality_diff_ci": [d - 0.04, d + 0.04], "n_queries": 300, "agreement": 0.8 + d,
               "agreement_ci": [0.75 + d, 0.85 + d], "verdict": "keep_teacher"}
              for n, d in ((250, -0.15), (500, -0.05), (1000, 0.02))]
    curve = {"points": points, "quality": _fit(points, "quality_diff", -0.02, 0.01),
             "agreement": _fit(points, "agreement", 0.95, 0.01)}
    row = {"variant": "main", "student_model": "s", "settings": "r=16", "train_rows": 1000, "served_as": "merged",
           "verdict": "keep_teacher", "quality": 0.77, "quality_ci": [0.72, 0.82], "quality_diff_ci": [-0.02, 0.06],
           "agreement": 0.82, "agreement_ci": [0.77, 0.87], "queries_per_s": 9.0, "cost_per_1k_queries": 0.001,
           "break_even_queries": None}
    study = {"quality_name": "accuracy", "variants": [row], "learning_curve": curve,
             "teacher": {"model": "t", "quality": 0.75, "concurrency": 16, "cost_per_1k_queries": 0.02}}
    write_study_report(study, "demo", tmp_path)
    markdown = (tmp_path / "study.md").read_text()
    assert markdown.startswith("# demo: student settings compared")
    assert "| main | s | r=16 | 1,000 | merged |" in markdown
    assert "## Learning curve" in markdown and "| 1,000 | 0.770 [0.720, 0.820] | 0.820 [0.770, 0.870] |" in markdown
    assert (tmp_path / "study.html").read_text().count("data:image/png;base64,") == 2


@pytest.mark.slow
def test_learning_curve_trains_nested_budgets_from_one_labelled_pool(tmp_path: Path, tiny_model: Path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    config = study_config(tiny_model, DEMO_INPUTS, study={"label_counts": [8, 16]})
    config["compare"] = {"max_concurrency": 16, "prompt_baseline": False}
    path = write_config(tmp_path / "study.yaml", config)
    result = CliRunner().invoke(app, ["study", "-c", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "run" / "study.json").read_text())["learning_curve"]
    assert [p["labels"] for p in curve["points"]][:2] == [8, 16] and len(curve["points"]) == 3
    point = tmp_path / "run" / "variants" / "labels-8"
    assert (point / "generate").is_symlink() and not (point / "filter").is_symlink()
    assert len(read_rows(point / "filter" / "train.parquet")) == 8
    summary = json.loads((point / "summary.json").read_text())
    assert [s["action"] for s in summary["stages"]] == ["skipped", "ran", "ran", "ran"]  # labelled once
    assert "Learning curve" in (tmp_path / "run" / "study.html").read_text()


def test_settings_name_every_key_a_variant_overrides() -> None:
    from distill.study.run import settings_text

    config = Config.model_validate(study_config("m", DEMO_INPUTS, variants={"kd": {"distill_weight": 0.5}}))
    kd = config.variant("kd")
    assert settings_text(config, {}) == "r=8 alpha=16 epochs=1 lr=0.0003"
    assert settings_text(kd, config.variants["kd"]) == "r=8 alpha=16 epochs=1 lr=0.0003 distill_weight=0.5"


def test_a_variant_keeps_its_teacher_answers_in_the_main_runs_store(tmp_path: Path) -> None:
    (tmp_path / "compare").mkdir()
    main = RunLayout(tmp_path).compare.teacher_answers
    main.write_text("answers paid for once")
    variant = RunLayout(tmp_path).variant("v")
    link_shared_stages(variant, shared=())
    assert variant.compare.teacher_answers.is_symlink()
    assert variant.compare.teacher_answers.read_text() == "answers paid for once"
    link_shared_stages(variant)  # linked once; relinking the stages leaves it
    assert variant.compare.teacher_answers.resolve() == main.resolve()
