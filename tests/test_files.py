"""Atomic writes (`spm_hf.files`): a failed write leaves the old file whole and no temporary file behind."""

import json
import os

import pytest

from spm_hf.files import write_atomic, write_figure, write_json


def test_write_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "report.json"
    write_json(str(path), {"a": 1})
    write_json(str(path), {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and os.listdir(tmp_path) == ["report.json"]
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain.json").st_mode & 0o777  # as open() makes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(str(path), {"kept": True})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(str(path), {"bad": object()})
    with pytest.raises(TypeError):
        write_atomic(str(path), 12345)  # neither bytes nor str: fails inside the write
    assert json.loads(path.read_text()) == {"kept": True} and os.listdir(tmp_path) == ["report.json"]


def test_write_figure_renders_in_the_extensions_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    write_figure(fig, str(tmp_path / "plot.png"))
    write_figure(fig, str(tmp_path / "plot.svg"))
    with pytest.raises(ValueError, match="no extension"):
        write_figure(fig, str(tmp_path))  # a folder given for a file: refused, nothing written
    plt.close(fig)
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:1000]
    assert sorted(os.listdir(tmp_path)) == ["plot.png", "plot.svg"]
