"""Result stamps: command, date, machine and commit, in JSON and markdown; metrics files carry them."""

import json
import re
import subprocess

import numpy as np
import pytest

from deepgaze_jax import provenance
from deepgaze_jax.evaluation import EvaluationResult
from tests.conftest import REPO_ROOT


def test_the_commit_is_the_checked_out_one_marked_dirty_only_by_tracked_changes():
    commit = provenance.git_commit()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        assert commit == ""
        return
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
    assert commit.split("+")[0] == head.stdout.strip()


def test_a_stamp_has_its_four_fields_first_and_replaces_stale_ones():
    stamp = provenance.stamp("python experiments/x.py --n 3", "abc")
    assert list(stamp) == list(provenance.FIELDS)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", stamp["date"])
    assert re.fullmatch(r"\S+ .+ \d+ CPU cores, jax \S+ on .+", stamp["machine"])
    doc = provenance.stamped({"result": 1, "commit": "old"}, stamp)
    assert list(doc) == [*provenance.FIELDS, "result"] and doc["commit"] == "abc"


def test_the_machine_names_the_cpu_and_its_widest_vector_instructions():
    cpu = provenance.cpu_info()
    assert cpu["model_name"] in provenance.machine()
    assert provenance.vector_isa({"avx", "avx2", "fma"}) == "AVX2"
    assert provenance.vector_isa({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "AVX-512+BF16+AMX"
    assert provenance.vector_isa({"avx2", "avx512f"}) == "AVX-512"
    assert provenance.vector_isa(set()) is None


def test_the_command_is_quoted_as_a_shell_needs():
    assert provenance.command("experiments/x.py", ["--set", "a=[1, 2]"]) == "python experiments/x.py --set 'a=[1, 2]'"


def test_markdown_gets_the_stamp_under_its_title_and_needs_a_title():
    stamp = {"command": "python x.py", "date": "2026-12-01 10:00 UTC", "machine": "m", "commit": "abc"}
    text = provenance.add_to_markdown("# Title\n\nbody\n", stamp)
    assert text == "# Title\n\nCommand: `python x.py`; commit abc; 2026-12-01 10:00 UTC; machine: m\n\nbody\n"
    with pytest.raises(ValueError, match="does not start with a '# ' title line"):
        provenance.add_to_markdown("no title\n", stamp)


def test_metrics_files_are_stamped_when_a_stamp_is_given(tmp_path):
    result = EvaluationResult(summary={"LL": 1.0, "LL/image": 1.5}, per_image={"LL": np.array([1.0, 2.0])},
                              image_names=["a", "b"], n_fixations=np.array([3, 1]), config={"model": "m"},
                              seconds=0.5)
    stamp = provenance.stamp("python experiments/crossval.py", "abc")
    json_path, md_path = result.write(tmp_path, stem="m_metrics", stamp=stamp)
    doc = json.loads(json_path.read_text())
    assert {k: doc[k] for k in provenance.FIELDS} == stamp
    assert doc["summary"] == {"LL": 1.0, "LL/image": 1.5}
    assert md_path.read_text().split("\n")[2] == provenance.markdown_line(stamp)
    plain_json, plain_md = result.write(tmp_path, stem="plain")
    assert "commit" not in json.loads(plain_json.read_text()) and "Command:" not in plain_md.read_text()


def test_results_are_written_as_a_stamped_json_and_markdown_pair(tmp_path):
    stamp = provenance.stamp("python experiments/x.py", "abc")
    json_path, md_path = provenance.write_results(tmp_path / "new" / "x_1.5", {"LL": 2.0, "commit": "stale"},
                                                  "# X\n\n| a |\n", stamp=stamp)
    assert (json_path.name, md_path.name) == ("x_1.5.json", "x_1.5.md")  # dots in the name stay
    doc = json.loads(json_path.read_text())
    assert list(doc)[:4] == list(provenance.FIELDS) and doc["commit"] == "abc" and doc["LL"] == 2.0
    assert md_path.read_text().split("\n")[:3] == ["# X", "", provenance.markdown_line(stamp)]


def test_a_stem_with_the_json_or_md_suffix_names_the_same_pair_and_markdown_is_optional(tmp_path):
    assert provenance.write_results(tmp_path / "x.md", {"a": 1}, "# X\n", indent=1) == (tmp_path / "x.json",
                                                                                        tmp_path / "x.md")
    assert (tmp_path / "x.json").read_text() == '{\n "a": 1\n}\n'
    assert provenance.write_results(tmp_path / "y.json", {"a": 1}) == (tmp_path / "y.json", None)
    assert not (tmp_path / "y.md").exists()
