"""Command-line options that are checked before anything boots."""

from __future__ import annotations

import pytest

from cxlrig.cli import build_parser


@pytest.mark.parametrize(("value", "message"), [
    ("0", "argument --plugin-sample: 0 is not 1 or more"),
    ("sixteen", "argument --plugin-sample: 'sixteen' is not a whole number"),
])
def test_bad_plugin_sample_is_refused(value: str, message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["boot", "t.yaml", "--plugin-sample", value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_plugin_options_parse() -> None:
    args = build_parser().parse_args(["boot", "t.yaml", "--plugin-sample", "16",
                                      "--plugin-delay"])
    assert (args.plugin, args.plugin_sample, args.plugin_delay) == (False, 16, True)
    plain = build_parser().parse_args(["boot", "t.yaml"])
    assert (plain.plugin, plain.plugin_sample, plain.plugin_delay) == (False, None, False)
