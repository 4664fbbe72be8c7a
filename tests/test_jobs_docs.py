"""docs/jobs.md's Python client snippet, run as written against a server with a job store."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from jobs_fixtures import job_settings, painter_entry, thread_server, write_models_yaml

pytestmark = pytest.mark.timeout(120)
DOC = (REPO / "docs" / "jobs.md").read_text()


def test_the_client_snippet_runs_as_written(tmp_path, capsys):
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", DOC, re.S)
        if block.startswith("from impasto import Client")
    ]
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    models = write_models_yaml(tmp_path, job_settings(url, tmp_path), [painter_entry()])
    server = thread_server(models, tmp_path / "home")
    try:
        code = snippet.replace("http://127.0.0.1:8080", server.url)
        namespace: dict = {}
        exec(compile(code, "docs/jobs.md", "exec"), namespace)
    finally:
        server.stop()
    assert namespace["done"]["status"] == "succeeded"
    assert namespace["output"].startswith(server.url + "/files/")  # one image: its URL
    printed = capsys.readouterr().out.split("\n")
    assert printed[0].startswith("start ") and printed[-2].startswith("completed ")
