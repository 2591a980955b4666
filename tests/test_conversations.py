"""The conversation format: every malformed line is a one-line error naming file and line."""

from __future__ import annotations

import json

import pytest

from tulu_lite.data.conversations import read_conversations, write_conversations
from tulu_lite.errors import TuluError

GOOD = {"id": "x1", "dataset": "dolly", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "line,expected",
    [
        ('{"messages": [', r"bad.jsonl:2: not valid JSON"),
        ("[1, 2]", r"bad.jsonl:2: expected a JSON object, got list"),
        ('{"conversations": []}', r"bad.jsonl:2: no 'messages' key \(keys: conversations\)"),
        ('{"messages": []}', r"bad.jsonl:2: 'messages' is empty"),
        ('{"messages": "hi"}', r"bad.jsonl:2: 'messages' must be a list, got str"),
        ('{"messages": [{"role": "human", "content": "a"}]}', r"bad.jsonl:2: messages\[0\].role is 'human', expected one of system, user, assistant"),
        ('{"messages": [{"role": "user", "content": 3}]}', r"bad.jsonl:2: messages\[0\].content must be a string, got int"),
        ('{"messages": [{"role": "user"}]}', r"bad.jsonl:2: messages\[0\].content must be a string, got nothing"),
        ('{"messages": [{"role": "user", "content": "a"}]}', r"bad.jsonl:2: no assistant message"),
        ('{"messages": ["hi"]}', r"bad.jsonl:2: messages\[0\] must be an object, got str"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(TuluError, match=expected) as info:
        list(read_conversations(path))
    assert "\n" not in str(info.value)


def test_reader_streams_keeps_extra_keys_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD), "", "   ", json.dumps(GOOD)])
    records = read_conversations(path)
    assert not isinstance(records, list)  # a generator: nothing is read before it is asked for
    assert list(records) == [GOOD, GOOD]


def test_missing_file(tmp_path):
    with pytest.raises(TuluError, match="nope.jsonl: file not found"):
        list(read_conversations(tmp_path / "nope.jsonl"))


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl"
    write_conversations([GOOD], path)

    def explode():
        yield GOOD
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_conversations(explode(), path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [GOOD]  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no partial file left behind
