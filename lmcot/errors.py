"""Errors of the user's making: a missing or damaged file, a bad value, a run that diverged.

Their message names the file or key and says what to do; a stage ends on one with that line and no
traceback (``stages/common.py``, ``run``). Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file that is not there; the message names it and what makes it."""


class DamagedFileError(UserError, ValueError):
    """An input file that is there but cannot be read as what it should be; the message names it."""


class UnsupportedModelError(UserError, ValueError):
    """A method that cannot handle this model (an attention head group, a layer it cannot read); the message names
    the method and the permutation or layer, says why and what to use instead."""
