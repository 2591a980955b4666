"""The conversation format: every malformed line is a one-line error naming file and line."""

from __future__ import annotations

import json

import pytest

from tulu_lite.data.conversations import read_conversations
from tulu_lite.errors import TuluError
from tulu_lite.json_files import write_jsonl

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
    write_jsonl([GOOD], path)

    def explode():
        yield GOOD
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_jsonl(explode(), path)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [GOOD]  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no partial file left behind


# ---- strictness: one meaning per file ---------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "score": NaN}',
     r"bad\.jsonl:2: not valid JSON \(NaN is not a JSON value\)"),
    ('{"messages": [{"role": "assistant", "content": "b"}], "w": -Infinity}',
     r"bad\.jsonl:2: not valid JSON \(-Infinity is not a JSON value\)"),
    ('{"messages": [{"role": "assistant", "content": "b"}], "messages": [{"role": "assistant", "content": "c"}]}',
     r"bad\.jsonl:2: not valid JSON \(key 'messages' appears twice in one object\)"),
    ('{"messages": [{"role": "assistant", "content": "b", "content": "c"}]}',
     r"bad\.jsonl:2: not valid JSON \(key 'content' appears twice in one object\)"),
    ('{"messages": [{"role": "assistant", "content": "unterminated}]}',
     r"bad\.jsonl:2: not valid JSON \(Unterminated string starting at column 48\)"),
])
def test_what_json_parsers_tolerate_is_refused(tmp_path, line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(TuluError, match=f"^.*{expected}$"):
        list(read_conversations(path))


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "caf\xe9"}\n')
    with pytest.raises(TuluError, match=r"^.*bad\.jsonl:2: not UTF-8 text \(invalid continuation byte at byte 18 of "
                                        r"the line\)$"):
        list(read_conversations(path))


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + json.dumps(GOOD).encode() + b"\r\n")
    assert list(read_conversations(path)) == [GOOD, GOOD]


def test_a_line_longer_than_the_bound_fails_before_it_is_parsed(tmp_path, monkeypatch):
    from tulu_lite import json_files

    monkeypatch.setattr(json_files, "MAX_LINE_BYTES", 1000)
    record = {"messages": [{"role": "user", "content": "x" * 2000}, {"role": "assistant", "content": "y"}]}
    path = write_lines(tmp_path / "long.jsonl", [json.dumps(GOOD), json.dumps(record)])
    with pytest.raises(TuluError, match=r"long\.jsonl:2: line is longer than 0 MiB"):
        list(read_conversations(path))


def test_the_writer_never_writes_nan(tmp_path):
    with pytest.raises(TuluError, match="NaN or Infinity"):
        write_jsonl([{**GOOD, "score": float("nan")}], tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
