"""The one root of every error cxlrig raises on purpose.

The CLI turns a :class:`CxlrigError` into a message and an exit code; anything
else that escapes is a bug in cxlrig and is shown with its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class CxlrigError(Exception):
    """Base class: a failure cxlrig can explain to its user.

    ``exit_code`` follows the house convention: 1 a check failed, 2 the run
    could not complete.
    """

    exit_code = 2


class CheckFailed(CxlrigError):
    """Something was measured and did not match what was expected."""

    exit_code = 1


class ProblemsError(CxlrigError):
    """Several things wrong at once, each a line of the message, all kept in ``problems``."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))
