"""The IPython extension in a real IPython shell, and the Colab switch."""

import sys
import types

import pytest


@pytest.fixture
def ip():
    from IPython.testing.globalipapp import get_ipython

    return get_ipython()  # a real InteractiveShell, made once per process


def test_magic_shows_a_panel_on_the_given_workspace(ip, tmp_path):
    ip.run_line_magic("load_ext", "gemma_ft_widgets")
    panel = ip.run_line_magic("gemma_ft", f"--workspace {tmp_path} --poll-interval 0.5")
    try:
        assert type(panel).__name__ == "ControlPanel"
        assert panel.workspace == str(tmp_path) and panel.poll_interval == 0.5
        assert panel.wait_ready(30) and panel.view == "form"
    finally:
        panel.close()


def test_bad_magic_arguments_print_usage(ip, capsys):
    ip.run_line_magic("load_ext", "gemma_ft_widgets")
    assert ip.run_line_magic("gemma_ft", "--bogus") is None
    assert "usage: %gemma_ft" in capsys.readouterr().out


def test_colab_custom_widget_manager_is_switched_on_once(monkeypatch, tmp_path):
    from gemma_ft_widgets import colab as colab_helper

    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setattr(colab_helper, "_colab_done", False)
    said = []
    assert colab_helper.enable_colab_widgets(out=said.append) is True
    assert colab_helper.enable_colab_widgets(out=said.append) is False
    assert calls == [1] and len(said) == 1 and "custom widget manager" in said[0]
