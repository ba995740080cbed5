"""twinrun.log_metric: JSON lines under a sweep, a debug line otherwise."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest

from twinrun import UsageError
from twinrun.metrics import METRICS_ENV, log_metric, read_metrics


def test_without_twinrun_it_only_logs_at_debug(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(METRICS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="twinrun.metrics"):
        log_metric("accuracy", 0.5)
    assert "accuracy" in caplog.text and list(tmp_path.iterdir()) == []


def test_appends_series_with_steps_and_keeps_nonfinite(monkeypatch, tmp_path):
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv(METRICS_ENV, str(path))
    for step, v in enumerate([0.9, 0.5, float("nan")]):
        log_metric("loss", v, step=step)
    log_metric("accuracy", float("inf"))
    got = read_metrics(path)
    assert [s for s, _ in got["loss"]] == [0, 1, 2]
    assert got["loss"][:2] == [(0, 0.9), (1, 0.5)] and math.isnan(got["loss"][2][1])
    assert got["accuracy"] == [(None, math.inf)]
    assert path.read_text().count("\n") == 4  # strict JSON: NaN written as a string
    assert "NaN" not in path.read_text()


def test_accepts_a_torch_scalar_and_rejects_non_numbers(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv(METRICS_ENV, str(tmp_path / "m.jsonl"))
    log_metric("acc", torch.tensor(0.25))
    assert read_metrics(tmp_path / "m.jsonl")["acc"] == [(None, 0.25)]
    with pytest.raises(UsageError, match="one number"):
        log_metric("acc", torch.ones(3))
    with pytest.raises(UsageError, match="name"):
        log_metric("", 1.0)


def test_truncated_last_line_is_skipped_other_bad_lines_raise(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"name": "a", "value": 1.0, "step": null}\n{"name": "a", "val')
    assert read_metrics(p) == {"a": [(None, 1.0)]}
    p.write_text('garbage\n{"name": "a", "value": 1.0, "step": null}\n')
    with pytest.raises(UsageError, match="line 1"):
        read_metrics(p)


def test_fresh_process_writes_to_the_file_named_by_the_variable(tmp_path):
    p = tmp_path / "m.jsonl"
    code = ("import twinrun; twinrun.log_metric('x', 3); import sys; "
            "print(sorted(m for m in sys.modules if m in ('torch','tensorflow','jax')))")
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, METRICS_ENV: str(p)},
                         capture_output=True, text=True, check=True).stdout
    assert read_metrics(p) == {"x": [(None, 3.0)]}
    assert out.strip() == "[]"  # logging a metric imports no framework
