"""The paper's task selection (§2.4, Appendix A) on real and hand-made tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_task
from itransfer.config.schema import EVALUATION_TASK_GROUPS, DataConfig, SelectionConfig
from itransfer.data import open_benchmark
from itransfer.data.index import build_index
from itransfer.data.selection import select_tasks


@pytest.fixture(scope="module")
def slice_selection(sni_slice: Path):
    return open_benchmark(DataConfig(sni_dir=sni_slice), seed=0, use_cache=False).selection


def test_real_tasks_land_in_the_paper_groups(slice_selection) -> None:
    selection = slice_selection
    # Unseen categories (Table 2), NLP sources, >= 140 instances.
    for name in (
        "task033_winogrande_answer_generation",  # Coreference Resolution
        "task1342_amazon_us_reviews_title",  # Title Generation
        "task1345_glue_qqp_question_paraprashing",  # Question Rewriting
        "task613_politifact_text_generation",  # Keyword Tagging
    ):
        assert name in selection.unseen, name
    # Training categories held out for an evaluation domain / adversarial source.
    assert "task1447_drug_extraction_ade" in selection.heldout_domain  # Healthcare
    assert "task1452_location_entity_extraction_btc_corpus" in selection.heldout_domain  # Twitter
    assert "task1364_hans_answer_generation" in selection.heldout_adversarial  # hans
    assert "task1364_hans_answer_generation" in selection.heldout_generalization
    # Ordinary training tasks.
    for name in ("task040_qasc_question_generation", "task1146_country_capital"):
        assert name in selection.seen, name
    # Exclusions, each with its reason.
    assert "fewer than 140" in selection.excluded["task121_zest_text_modification"]
    assert "fewer than 140" in selection.excluded["task393_plausible_result_generation"]
    assert "neither a seen nor an unseen" in selection.excluded["task352_coda-19_classification"]
    assert "evaluation domain" in selection.excluded["task959_e2e_nlg_text_generation_identify"]


def test_groups_partition_the_tasks(slice_selection) -> None:
    groups = slice_selection.groups()
    names = [name for group in groups.values() for name in group]
    names += list(slice_selection.excluded)
    assert len(names) == len(set(names)) == 194
    assert not set(groups["seen"]) & set(slice_selection.heldout_generalization)
    # Every group but the training one is split as evaluation tasks (test + few-shot pool).
    assert set(groups) - {"seen"} == set(EVALUATION_TASK_GROUPS)


def _index(tmp_path: Path, tasks: dict[str, dict]) -> list:
    for name, fields in tasks.items():
        write_task(tmp_path / "tasks", name, **fields)
    return build_index(tmp_path).metadata


def test_rules_on_hand_made_tasks(tmp_path: Path) -> None:
    metadata = _index(
        tmp_path,
        {
            "task001_seen": {},
            "task002_german": {"Input_language": ["German"]},
            "task003_synthetic_train": {"Source": ["Synthetic"]},
            "task004_synthetic_unseen": {"Source": ["synthetic"], "Categories": ["Word Analogy"]},
            "task005_unseen": {"Categories": ["Title Generation -> News"]},
            "task006_small_unseen": {
                "Categories": ["Title Generation"],
                "Instances": [{"input": "x", "output": ["y"]}] * 139,
            },
            "task007_anli": {"Source": ["ANLI"]},
            "task008_reddit": {"Domains": ["Social Media -> Reddit"]},
            "task009_both": {"Categories": ["Question Answering", "Data to Text"]},
            "task010_other": {"Categories": ["Mathematics"]},
        },
    )
    selection = select_tasks(metadata, SelectionConfig())
    assert selection.seen == ("task001_seen",)
    assert selection.unseen == ("task005_unseen", "task009_both")
    assert selection.unseen_synthetic == ("task004_synthetic_unseen",)
    assert selection.heldout_adversarial == ("task007_anli",)
    assert selection.heldout_domain == ("task008_reddit",)
    assert selection.excluded["task002_german"].startswith("not English")
    assert selection.excluded["task003_synthetic_train"].startswith("synthetic")
    assert "fewer than 140 instances (139)" in selection.excluded["task006_small_unseen"]
    assert "'Mathematics'" in selection.excluded["task010_other"]


def test_selection_lists_are_configurable(tmp_path: Path) -> None:
    metadata = _index(tmp_path, {"task001_seen": {}, "task002_small": {"Instances": [
        {"input": "x", "output": ["y"]}] * 50, "Categories": ["Title Generation"]}})
    config = SelectionConfig(
        seen_categories=["Title Generation"], unseen_categories=["Question Answering"],
        min_eval_instances=10,
    )
    selection = select_tasks(metadata, config)
    assert selection.seen == ("task002_small",)
    assert selection.unseen == ("task001_seen",)


def test_benchmark_keeps_only_the_recent_tasks_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation walks hundreds of tasks: the benchmark keeps a few parsed, not all of them
    (at full size their text is GBs), and a task asked for again is parsed again, equal."""
    from itransfer.data import benchmark as benchmark_module

    parsed: list[str] = []
    parse = benchmark_module.parse_task
    monkeypatch.setattr(benchmark_module, "parse_task",
                        lambda path: parsed.append(path.stem) or parse(path))
    benchmark = open_benchmark(DataConfig(), seed=0)
    benchmark.max_parsed_tasks = 2
    names = list(benchmark.selection.seen[:4])
    first = benchmark.task(names[0])
    assert benchmark.task(names[0]) is first and benchmark.split(names[0]).task == names[0]
    for name in names[1:]:
        benchmark.task(name)
    assert parsed == names
    assert benchmark.task(names[-2]) is not None and parsed == names  # still kept
    again = benchmark.task(names[0])
    assert parsed == [*names, names[0]]
    assert again == first and again is not first


def test_every_exclusion_reason_and_boundary_exactly(tmp_path: Path) -> None:
    """Each rule's exact reason, the 140-instance boundary on both sides, every language field,
    and the group names that ``groups()`` and ``to_json()`` report."""
    one = [{"input": "x", "output": ["y"]}]
    metadata = _index(
        tmp_path,
        {
            "task001_seen": {},
            "task002_output_french": {"Output_language": ["French"]},
            "task003_instruction_spanish": {"Instruction_language": ["Spanish"]},
            "task004_unseen_at_140": {"Categories": ["Title Generation"], "Instances": one * 140},
            "task005_reddit_small": {"Domains": ["Social Media -> Reddit"], "Instances": one * 9},
            "task006_anli_small": {"Source": ["anli"], "Instances": one * 9},
            "task007_synthetic_train": {"Source": ["Synthetic"]},
            "task008_two_unseen": {"Categories": ["Keyword Tagging", "Title Generation"],
                                   "Instances": one * 139},
            "task009_input_german": {"Input_language": ["German"]},
            "task010_no_output_language": {"Output_language": []},
            "task011_two_foreign": {"Output_language": ["French", "English", "German"]},
            "task012_two_other_categories": {"Categories": ["Mathematics", "Poetry"]},
            "task013_reddit_at_140": {"Domains": ["Social Media -> Reddit"],
                                      "Instances": one * 140},
            "task014_seen_last": {},
        },
    )
    selection = select_tasks(metadata, SelectionConfig())
    assert selection.unseen == ("task004_unseen_at_140",)
    assert selection.excluded == {
        "task002_output_french": "not English: output language French not in ['English']",
        "task003_instruction_spanish":
            "not English: instruction language Spanish not in ['English']",
        "task005_reddit_small": "held out of training (evaluation domain "
                                "'Social Media -> Reddit') with fewer than 140 instances for "
                                "evaluation",
        "task006_anli_small": "held out of training (adversarial source 'anli') with fewer "
                              "than 140 instances for evaluation",
        "task007_synthetic_train": "synthetic task (no synthetic tasks are used for training)",
        "task008_two_unseen": "unseen category 'Keyword Tagging' but fewer than 140 instances "
                              "(139)",
        "task009_input_german": "not English: input language German not in ['English']",
        "task010_no_output_language": "not English: output language missing not in ['English']",
        "task011_two_foreign": "not English: output language French, German not in ['English']",
        "task012_two_other_categories": "category 'Mathematics', 'Poetry' is neither a seen nor "
                                        "an unseen category",
    }
    assert selection.heldout_domain == ("task013_reddit_at_140",)
    assert list(selection.groups()) == ["seen", "unseen", "unseen_synthetic", "heldout_domain",
                                        "heldout_adversarial"]
    data = selection.to_json()
    assert data["counts"] == {"seen": 2, "unseen": 1, "unseen_synthetic": 0,
                              "heldout_domain": 1, "heldout_adversarial": 0,
                              "heldout_generalization": 1, "excluded": 10}
    assert data["seen"] == ["task001_seen", "task014_seen_last"]
    assert data["heldout_generalization"] == ["task013_reddit_at_140"]
    assert list(data["excluded"]) == sorted(selection.excluded)
    assert selection.category_counts("unseen") == {"Title Generation": 1}
