"""EM normalisation and metrics (spec A.6); NQSwap / Macnoise readers on fixtures in the published
layouts; the prompt template, demonstrations and question-disjoint splits."""

import numpy as np
import pytest

from thesis.core.errors import DataNotFoundError
from thesis.spare.em import exact_match, normalise, steering_metrics, substring_of_context
from thesis.spare.kc_data import block, dev_test_split, prompt, read_split, sample_demos


def test_normaliser_and_matches():
    assert normalise("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower.", ["Paris", "Eiffel Tower"])
    assert not exact_match("Eiffel", ["Eiffel Tower"])
    assert substring_of_context("Oslo", "The capital is oslo, they say.")
    assert substring_of_context("", "anything")  # the code's loose rule
    assert not substring_of_context("Lima", "The capital is oslo.")


def test_steering_metrics_by_hand():
    base_c = np.array([1, 1, 0, 0], bool)
    base_m = np.array([0, 0, 1, 1], bool)
    to_c_c, to_c_m = np.array([1, 0, 1, 0], bool), np.array([0, 1, 0, 1], bool)
    to_m_c, to_m_m = np.array([0, 1, 0, 0], bool), np.array([1, 0, 1, 1], bool)
    m = steering_metrics(base_c, base_m, to_c_c, to_c_m, to_m_c, to_m_m)
    assert m["em_c"] == 50 and m["em_m"] == 75
    assert m["em_c_to_m"] == 50 and m["em_m_to_c"] == 50
    assert m["em_m_to_m"] == 100 and m["em_c_to_c"] == 50
    assert m["off_target_m_when_to_c"] == 50 and m["off_target_c_when_to_m"] == 25


@pytest.fixture(scope="module")
def kc_fixtures(tmp_path_factory):
    from thesis.core.fixtures import materialize

    root = tmp_path_factory.mktemp("kc")
    return materialize("nqswap_tiny", root), materialize("macnoise_tiny", root)


def test_readers_on_published_layouts(kc_fixtures):
    nqswap, macnoise = kc_fixtures
    rows = read_split(nqswap, "dev")
    assert len(rows) == 96 and len({r.group for r in rows}) == 48
    assert isinstance(rows[0].org_answer, tuple) and rows[0].sub_answer[0] in rows[0].sub_context
    evaluation = read_split(macnoise, "train_chatgpt", "macnoise", max_rows=40)
    assert len(evaluation) == 40
    assert len(read_split(macnoise, "train", "macnoise")) == 16
    with pytest.raises(DataNotFoundError, match="NQ-Swap"):
        read_split(nqswap, "validation", "nqswap")


def test_prompt_template_and_demonstrations(kc_fixtures):
    rows = read_split(kc_fixtures[0], "dev")
    item = rows[0]
    assert block(None, "q?") == "question: q?\nanswer:"
    demos = sample_demos(rows, 3, seed=42, exclude_group=item.group)
    assert len(demos) == 3 and item.group not in {d.group for d in demos}
    assert demos == sample_demos(rows, 3, seed=42, exclude_group=item.group)
    text = prompt(item, demos, "doo")
    assert text.endswith(f"context: {item.sub_context}\nquestion: {item.question}\nanswer:")
    assert text.startswith(f"context: {demos[0].org_context}\nquestion: {demos[0].question}\nanswer: {demos[0].org_answer[0]}\n\n")
    assert f"answer: {demos[1].sub_answer[0]}\n\n" in prompt(item, demos, "dss")


def test_dev_test_split_is_by_question(kc_fixtures):
    rows = read_split(kc_fixtures[0], "dev")
    dev, test = dev_test_split(rows, 10, seed=42)
    assert len({r.group for r in dev}) == 10 and len(dev) + len(test) == len(rows)
    assert not {r.group for r in dev} & {r.group for r in test}


@pytest.mark.parametrize("name", ["nqswap_tiny", "macnoise_tiny", "spare_sae_tiny_gemmascope", "spare_sae_tiny_eleuther"])
def test_fixtures_are_deterministic(tmp_path, name):
    import hashlib

    from thesis.core.fixtures import materialize

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(materialize(name, tmp_path / "a")) == digest(materialize(name, tmp_path / "b"))
