"""Each process of a multi-process run reports its devices and memory (train/process_report.py),
and the status joins them to the lock's or result's process list (runs/status.py)."""

from __future__ import annotations

import os
import types

from gemma_ft_widgets import contract
from gemma_ft_widgets.runs.status import _with_reports, describe_process
from gemma_ft_widgets.train.process_report import ProcessReport, read_reports


def devices(*ids):
    return [types.SimpleNamespace(id=i, platform="gpu", device_kind="NVIDIA H200") for i in ids]


def test_reports_are_rewritten_at_most_every_few_seconds_and_joined_by_process_and_pid(tmp_path):
    run = str(tmp_path)
    r0 = ProcessReport(run, 0, devices(0, 1), every_s=3600)
    r0.write(2_000_000_000, 7_000_000_000, None, force=True)
    r0.write(1, 1, 5)  # too soon: the file keeps the first report
    ProcessReport(run, 1, devices(2, 3)).write(3_000_000_000, None, 5, force=True)
    reports = read_reports(run)
    assert sorted(reports) == [0, 1] and reports[0]["host_rss_bytes"] == 2_000_000_000
    assert reports[0]["devices"] == [0, 1] and reports[1]["devices"] == [2, 3]

    me = os.getpid()
    procs = _with_reports([{"process": 0, "pid": me, "alive": True},
                           {"process": 1, "pid": me + 1, "alive": False}], run)  # 1: an earlier attempt's
    assert procs[0]["devices"] == [0, 1] and procs[0]["device_mem_bytes"] == 7_000_000_000
    assert "report_age_s" in procs[0] and "devices" not in procs[1]
    line = describe_process(procs[0])
    assert line.startswith(f"0: pid {me} alive on ") and "2 gpu device(s) [0, 1]" in line
    assert "host 2.0 GB" in line and "device 7.0 GB" in line


def test_a_torn_or_foreign_file_in_the_reports_folder_is_skipped(tmp_path):
    folder = tmp_path / contract.PROCESSES_DIR
    folder.mkdir()
    (folder / "process-0.json").write_text('{"process": 0, "pid"')
    (folder / "notes.txt").write_text("mine")
    ProcessReport(str(tmp_path), 1, devices(1)).write(None, None, None, force=True)
    assert sorted(read_reports(str(tmp_path))) == [1]
    assert read_reports(str(tmp_path / "nowhere")) == {}
