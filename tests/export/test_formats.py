"""``python -m export`` is driven by one formats table: its flags and ``--help`` come from it."""

from __future__ import annotations

import pytest

from export.__main__ import build_parser
from export.formats import FORMATS, OPTIONS, formats_table


def test_every_format_and_option_is_a_flag_and_in_the_help():
    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    text = parser.format_help()
    for f in FORMATS:
        assert f.name in text and f.files in text
        if f.flag:
            assert f.flag in flags
        for option in f.options:
            assert option in flags
    assert set(OPTIONS) == {o for f in FORMATS for o in f.options}  # no option without a format
    assert formats_table() in text


def test_each_option_belongs_to_one_format():
    owners = [o for f in FORMATS for o in f.options]
    assert len(owners) == len(set(owners))


def test_option_types_refuse_bad_values(capsys):
    for argv, message in (
        (["--int8-float-ends", "two"], "argument --int8-float-ends: must be D,T"),
        (["--int8-keep-below", "1.5"], "argument --int8-keep-below: must be in (0, 1]"),
        (["--trt-size", "100x100"], "multiple of 32"),
        (["--triton-backend", "tensorflow"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(["--out", "x", *argv])
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_the_triton_backend_has_its_own_name():
    args = build_parser().parse_args(["--out", "x", "--triton", "r", "--triton-backend", "python"])
    assert args.triton_backend == "python"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--out", "x", "--backend", "python"])
