"""jsonlite (the keeper's JSON) gives what json gives, on the documents hbwrap writes and on bad input."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from hbwrap import jsonlite

DOCS = [
    {}, [], "", 0, -1, 2**70, 1.5, 1e-7, 1e300, -0.0, True, False, None,
    {"schema": 1, "keeper_pid": 1234, "child_pid": None, "exit_code": -9, "ended_at": 1796117051.5276098,
     "output_unsent": [1, 2, 3], "notes": ["é", "\u2028", "\x00\x1f\"\\/", "😀"], "nested": {"b": [], "a": {}}},
    {"z": 1, "a": 2, "m": [{"y": None, "x": True}]},
    ("tuple", 1),
]


@pytest.mark.parametrize("doc", DOCS)
def test_dumps_is_json_dumps_sorted(doc):
    assert jsonlite.dumps(doc) == json.dumps(doc, sort_keys=True)
    assert jsonlite.loads(jsonlite.dumps(doc)) == json.loads(json.dumps(doc))


def test_random_documents_round_trip_like_json():
    rng = random.Random(7)

    def value(depth: int):
        kind = rng.randrange(8 if depth < 4 else 5)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.randint(-2**40, 2**40)
        if kind == 2:
            return rng.uniform(-1e6, 1e6)
        if kind in (3, 4):
            return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)])) for _ in range(rng.randrange(6)))
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {"".join(rng.choice("abcé_") for _ in range(3)): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(500):
        doc = value(0)
        text = json.dumps(doc, sort_keys=True)
        assert jsonlite.dumps(doc) == text
        assert jsonlite.loads(text) == doc and jsonlite.loads(text.encode()) == doc
        assert jsonlite.loads(json.dumps(doc, indent=2)) == doc


def test_special_floats_as_json_writes_them():
    for x in (math.inf, -math.inf):
        assert jsonlite.dumps([x]) == json.dumps([x])
    assert math.isnan(jsonlite.loads(jsonlite.dumps(math.nan)))


@pytest.mark.parametrize("bad", ["", " ", "{", '{"a": 1', '{"a": 1} x', "[1,]", "nul", '"\\x"', "{'a': 1}", "01",
                                 '"unterminated', b"\xff\xfe"])
def test_what_json_refuses_is_a_value_error(bad):
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonlite.loads(bad)


def test_what_cannot_be_written_is_a_type_error():
    for bad in ({"set": {1}}, object(), [b"bytes"]):
        with pytest.raises(TypeError):
            jsonlite.dumps(bad)
    assert jsonlite.dumps({1: "int key"}) == json.dumps({1: "int key"}, sort_keys=True)  # as json does


def test_unsorted_keys_stay_in_their_order():
    doc = {"ts": "t", "job": "j", "event": "e", "attempt": 1, "z": {"b": 1, "a": 2}}
    assert jsonlite.dumps(doc, sort_keys=False) == json.dumps(doc)


BAD = ["", " ", "{", '{"a": 1', '{"a": 1} x', "[1,]", "nul", '"\\x"', "{'a': 1}", "01", '"unterminated', "[1 2]",
       '{"a" 1}', "tru", "-", '"\\ud800"x']


def test_bad_input_is_a_value_error_where_the_json_package_was_never_imported():
    # _json raises its errors as json.decoder.JSONDecodeError, found in sys.modules only: without the json
    # package loaded (the keeper, the supervisor) it used to return NULL, a SystemError with a traceback
    code = (f"import sys; from hbwrap import jsonlite\nfor bad in {BAD!r}:\n"
            "    try:\n        jsonlite.loads(bad)\n    except ValueError:\n        pass\n"
            "    else:\n        print('accepted', repr(bad))\n"
            "print(sorted(m for m in ('json', 'json.decoder') if m in sys.modules))")
    root = str(__import__('hbwrap').__path__[0].rsplit('/', 1)[0])
    r = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {root!r})\n{code}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r


def test_it_imports_neither_json_nor_re():
    code = ("import sys; from hbwrap import jsonlite; jsonlite.loads(jsonlite.dumps({'a': [1, 'x']}));"
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(__import__('hbwrap').__path__[0].rsplit('/', 1)[0])!r}); {code}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r
