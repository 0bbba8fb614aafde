"""Dataset formats: detection, validation, and the turn layout the model sees."""

import json

import pytest

from gemma_ft_widgets import datasets
from gemma_ft_widgets.datasets import DatasetError, load_records, render_example


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("row,fmt", [
    ({"text": "hello"}, "text"),
    ({"prompt": "p", "response": "r"}, "prompt_response"),
    ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}, "chat"),
])
def test_formats_are_detected(tmp_path, row, fmt):
    path = write(tmp_path, "d.jsonl", json.dumps(row) + "\n")
    records, detected = load_records(path)
    assert detected == fmt and records == [row]


def test_prompt_response_layout_masks_the_prompt():
    prompt, response = render_example({"prompt": "Hi?", "response": "Hello."}, "prompt_response")
    assert prompt == "<start_of_turn>user\nHi?<end_of_turn>\n<start_of_turn>model\n"
    assert response == "Hello.<end_of_turn>"


def test_alpaca_joins_instruction_and_input():
    prompt, response = render_example({"instruction": "Add", "input": "2+2", "output": "4"}, "alpaca")
    assert "user\nAdd\n\n2+2<end_of_turn>" in prompt and response == "4<end_of_turn>"


def test_chat_puts_system_into_the_first_user_turn_and_learns_the_last_answer():
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"},
    ]}
    prompt, response = render_example(record, "chat")
    assert prompt.startswith("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n")
    assert "<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye" in prompt
    assert prompt.endswith("<start_of_turn>model\n") and response == "Ciao<end_of_turn>"


def test_csv_files_are_read_with_line_numbers(tmp_path):
    path = write(tmp_path, "d.csv", "prompt,response\nhi,there\n\"multi\nline\",ok\nx,\n")
    with pytest.raises(DatasetError) as info:
        load_records(path)
    assert info.value.problems == ["d.csv line 5: field 'response' is empty"]


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="file is empty"):
        load_records(write(tmp_path, "e.jsonl", ""))
    with pytest.raises(DatasetError, match="no examples"):
        load_records(write(tmp_path, "blank.jsonl", "\n\n"))


def test_chat_roles_and_last_turn_are_checked(tmp_path):
    rows = [{"messages": [{"role": "robot", "content": "x"}]},
            {"messages": [{"role": "user", "content": "x"}]}]
    path = write(tmp_path, "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError) as info:
        load_records(path, "chat")
    assert "line 1: messages[0] has role 'robot'" in info.value.problems[0]
    assert "line 2: the last message must be from the assistant" in info.value.problems[1]


def test_a_giant_line_is_reported_without_loading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write('{"text": "ok"}\n')
        f.write('{"text": "' + "x" * 10_000 + '"}\n')
        f.write('{"text": "fine"}\n')
    with pytest.raises(DatasetError) as info:
        load_records(str(path))
    assert info.value.problems == ["big.jsonl line 2: line longer than 1024 bytes; split it or shorten it"]


def test_sample_dataset_is_valid():
    from gemma_ft_widgets.config import sample_dataset_path

    records, fmt = load_records(sample_dataset_path())
    assert fmt == "prompt_response" and len(records) >= 200
