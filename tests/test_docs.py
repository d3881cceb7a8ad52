"""The documentation builds without warnings, and its generated pages are what their commands produce now."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("create_model", "bi_wkv", "crop_face", "HubModel"):  # the reference is really generated
        assert 'id="rwkv_vision' in api and name in api, name


def test_model_zoo_page_is_current(tmp_path):
    script = runpy.run_path(str(REPO / "docs" / "gen_model_zoo.py"))
    script["main"](tmp_path / "model_zoo.md")
    assert (tmp_path / "model_zoo.md").read_text() == (REPO / "docs" / "model_zoo.md").read_text(), \
        "docs/model_zoo.md is stale: run python docs/gen_model_zoo.py"


def test_readme_wkv_table_is_current():
    report = runpy.run_path(str(REPO / "benchmarks" / "report.py"))
    readme = (REPO / "README.md").read_text()
    assert report["readme_with_wkv_table"](readme, report["load"]("wkv")) == readme, \
        "README.md's WKV table is stale: run python benchmarks/report.py"


def test_readme_wkv_markers_must_be_once_each_and_in_order():
    report = runpy.run_path(str(REPO / "benchmarks" / "report.py"))
    start, end = report["README_WKV"]
    d = report["load"]("wkv")
    for bad in (f"{end}\n{start}", f"{start}\n{start}\n{end}", "no markers"):
        with pytest.raises(ValueError, match="markers once each"):
            report["readme_with_wkv_table"](bad, d)
    torch_only = {**d, "rows": [r for r in d["rows"] if r["backend"] == "torch"]}  # no extension on that machine
    assert report["readme_with_wkv_table"](f"a\n{start}\nold\n{end}\n", torch_only) == f"a\n{start}\nold\n{end}\n"


def test_every_doc_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert [p for p in pages if p not in nav] == []
