"""`videomt-jax bench` on a core install (no torch): one line naming the extra to install."""

from __future__ import annotations

import pytest

from videomt_jax.cli import bench, main


@pytest.mark.parametrize(("module", "extra"), [("torch", "torch"), ("onnxruntime", "onnx")])
def test_missing_extra_is_one_line(monkeypatch, capsys, module, extra):
    def harness():
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(bench, "load_harness", harness)
    assert main(["bench", "--iters", "1"]) == 1
    err = capsys.readouterr().err
    assert f"the benchmark needs {module}: install the {extra} extra (`pip install -e '.[{extra}]'`" in err
    assert "Traceback" not in err


def test_other_import_errors_are_not_hidden(monkeypatch):
    def harness():
        raise ModuleNotFoundError("No module named 'videomt_bench.cli'", name="videomt_bench.cli")

    monkeypatch.setattr(bench, "load_harness", harness)
    with pytest.raises(ModuleNotFoundError, match="videomt_bench"):
        main(["bench"])
