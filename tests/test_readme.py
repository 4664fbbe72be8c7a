"""The README stays true: its quickstart model serves, and CI runs its test command."""

from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_quickstart_model_serves_as_written(tmp_path, serve_thread):
    (code,) = _blocks("python")
    root = tmp_path / "my-model"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(code)
    (root / "config.yaml").write_text("model_name: my-model\n")
    server = serve_thread(root)
    assert server.client.post("/predict", json={"text": "hello"}).json() == {"output": "olleh"}
    bad = server.client.post("/predict", json={"txt": "hello"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "text"


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash")]
    test_command = next(c for c in commands if c.endswith("pytest"))
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_readme_serve_command_uses_the_bundled_example():
    serve = next(b.strip() for b in _blocks("bash") if "impasto serve examples/" in b)
    example = serve.rsplit(" ", 1)[-1]
    assert (REPO / example / "config.yaml").is_file()
