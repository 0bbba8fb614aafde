"""The real trainer's STARTING phases (#20): the weights downloaded by kagglehub from a local
HTTP server standing in for Kaggle (kagglesdk's KAGGLE_API_ENVIRONMENT=TEST talks to
http://localhost:7777), the data tokenized, the step compiled, and on a resume the checkpoint
restored and the compile announced with the last compile time of the same shapes."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import threading

import pytest

from gemma_ft_widgets import contract, datasets
from gemma_ft_widgets import models as table
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.runs import phases

from .test_train_loop import events, make_run, train
from .test_train_models import HANDLE, write_kaggle_cache

KAGGLE_TEST_PORT = 7777  # kagglesdk.kaggle_env: KaggleEnv.TEST -> http://localhost:7777


class FakeKaggle(http.server.ThreadingHTTPServer):
    """The two calls kagglehub makes for a versioned handle: list the files, download each."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        super().__init__(("localhost", KAGGLE_TEST_PORT), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        call = self.path.rsplit("/", 1)[-1]
        self.server.requests.append((call, body.get("path")))
        if call == "ListModelInstanceVersionFiles":
            data = json.dumps({"files": [{"name": n, "size": len(b)} for n, b in self.server.files.items()],
                               "nextPageToken": ""}).encode()
            kind = "application/json"
        elif call == "DownloadModelInstanceVersion" and body.get("path") in self.server.files:
            data, kind = self.server.files[body["path"]], "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_kaggle(tmp_path):
    """The tiny model's checkpoint and tokenizer, served as a Kaggle model version."""
    src = str(tmp_path / "src")
    _, version_dir = write_kaggle_cache(src)
    files = {}
    for folder, _, names in os.walk(version_dir):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, version_dir)] = open(path, "rb").read()
    try:
        server = FakeKaggle(files)
    except OSError as e:
        pytest.fail(f"port {KAGGLE_TEST_PORT} (kagglesdk's TEST endpoint) is taken: {e}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_each_starting_phase_is_reported_download_data_compile_then_restore(tmp_path, monkeypatch, fake_kaggle):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    spec = dataclasses.replace(table.TINY, name="tiny-on-kaggle", kaggle_handle=HANDLE)
    monkeypatch.setitem(table.MODELS, spec.name, spec)

    run_dir = make_run(tmp_path / "ws", "run", model=spec.name, max_steps=2, checkpoint_every=2)
    assert train(run_dir).state == "FINISHED"
    first = [e for e in events(run_dir) if e["event"] == contract.EVENT_PHASE]
    names = [e["phase"] for e in first]
    # Model (its download inside), data, compile, in that order; the download in bytes of the total.
    assert names[0] == "model" and "download" in names
    assert names.index("download") < names.index("data") < names.index("compile")
    downloads = [e for e in first if e["phase"] == "download"]
    served = sum(len(b) for b in fake_kaggle.files.values())
    assert downloads[-1]["bytes"] == downloads[-1]["total"] == served
    assert all(a["bytes"] <= b["bytes"] for a, b in zip(downloads, downloads[1:]))
    assert {p for c, p in fake_kaggle.requests if c == "DownloadModelInstanceVersion"} == set(fake_kaggle.files)
    assert "downloading the weights: " in phases.describe(downloads[-1])
    data = [e for e in first if e["phase"] == "data"]
    n = data[-1]["total"]
    records, _ = datasets.load_records(sample_dataset_path())
    assert n == len(records) and data[-1]["tokenized"] == n  # every record of the file, tokenized
    (compile_phase,) = [e for e in first if e["phase"] == "compile"]
    assert compile_phase["last_seconds"] is None  # nothing compiled with these shapes here before
    (compiled,) = events(run_dir, "compile")
    times = contract.read_json(tmp_path / "ws" / contract.COMPILE_TIMES_NAME)
    assert list(times.values()) == [round(compiled["seconds"], 2)]
    assert all(e["time"] <= compiled["time"] for e in first)

    # A resume: cached weights (no download), the checkpoint restored, the last compile time shown.
    requests = len(fake_kaggle.requests)
    config = contract.read_json(os.path.join(run_dir, contract.CONFIG_NAME))
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), {**config, "max_steps": 4})
    assert train(run_dir).state == "FINISHED"
    start2 = [i for i, e in enumerate(events(run_dir)) if e["event"] == "start"][1]
    second = [e for e in events(run_dir)[start2:] if e["event"] == contract.EVENT_PHASE]
    assert len(fake_kaggle.requests) == requests and "download" not in [e["phase"] for e in second]
    (restore,) = [e for e in second if e["phase"] == "restore"]
    assert restore["step"] == 2
    (compile_phase,) = [e for e in second if e["phase"] == "compile"]
    assert compile_phase["last_seconds"] == round(compiled["seconds"], 2)
    assert "(last time" in phases.describe(compile_phase)
