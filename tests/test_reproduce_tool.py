"""tools/reproduce.py --only: re-evaluates the named weight files and keeps every other row of the table."""
from __future__ import annotations

import json

import pytest
from conftest import import_tool, require_shared


def test_only_merges_the_new_rows_into_the_existing_table(tmp_path):
    shared = require_shared()
    out, js = tmp_path / "repro.md", tmp_path / "repro.json"
    kept = [{"model": "bicubic", "file": "-", "scale": 4, "provenance": "-", "Set5": [28.4, 0.81]},
            {"model": "spanv2", "file": "spanv2_ntire26_x4.pth", "scale": 4, "provenance": "?", "Set5": [1.0, 0.1]},
            {"model": "imdn", "file": "imdn_x2.pth", "scale": 2, "provenance": "37.996", "Set5": [37.9, 0.96]}]
    js.write_text(json.dumps(kept))
    reproduce = import_tool("reproduce")
    assert reproduce.main(["--shared", str(shared), "--sets", "Set5", "--out", str(out), "--json", str(js),
                           "--threads", "1", "--only", "spanv2_ntire26_x4.pth"]) == 0
    rows = json.loads(js.read_text())
    assert [r["file"] for r in rows] == ["-", "imdn_x2.pth", "spanv2_ntire26_x4.pth"]  # table order, stale row replaced
    assert rows[:2] == [kept[0], kept[2]]
    assert rows[2]["provenance"] == "31.768" and abs(rows[2]["Set5"][0] - 31.768) <= 0.01
    assert "| spanv2 | spanv2_ntire26_x4.pth | x4 | 31.768 |" in out.read_text()

    with pytest.raises(ValueError, match="no_such.pth: not a known teacher file"):
        reproduce.main(["--shared", str(shared), "--json", str(js), "--only", "no_such.pth"])
