"""Atomic writes (`spm_hf.files`): a failed write leaves the old file whole and no temporary file behind."""

import json
import os

import pytest

from spm_hf.files import write_atomic, write_json


def test_write_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "report.json"
    write_json(str(path), {"a": 1})
    write_json(str(path), {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and os.listdir(tmp_path) == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(str(path), {"kept": True})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(str(path), {"bad": object()})
    with pytest.raises(TypeError):
        write_atomic(str(path), 12345)  # neither bytes nor str: fails inside the write
    assert json.loads(path.read_text()) == {"kept": True} and os.listdir(tmp_path) == ["report.json"]
