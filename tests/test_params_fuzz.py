"""Random and hostile params: each is accepted or refused with a ParamsError naming what is wrong,
never a traceback from deep inside the validator."""

import copy
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmcot.config import ParamsError, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = read_yaml(ROOT / "params.yaml")

# anything YAML can hold, hostile numbers included
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)


def leaf_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaf_paths(value, (*prefix, key))
    yield prefix


PATHS = [p for p in leaf_paths(DEFAULT) if p]


def check(params, key: str | None = None):
    """Accepted, or refused with a ParamsError that names ``key`` (the one edited) when given."""
    try:
        validate(params)
    except ParamsError as err:
        assert str(err).startswith("invalid params.yaml")
        assert len(str(err)) < 20_000
        if key is not None:
            assert key in str(err), (key, str(err))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=yaml_values)
def test_any_value_at_any_key_is_accepted_or_refused_cleanly(path, value):
    params = copy.deepcopy(DEFAULT)
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    check(params, ".".join(path))


@settings(max_examples=100, deadline=None)
@given(params=yaml_values)
def test_any_document_is_accepted_or_refused_cleanly(params):
    check(params)


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(PATHS), name=st.text(min_size=1, max_size=10))
def test_renamed_keys_are_named(path, name):
    params = copy.deepcopy(DEFAULT)
    node = params
    for key in path[:-1]:
        node = node[key]
    if name in node:
        return
    node[name] = node.pop(path[-1])
    try:
        validate(params)
    except ParamsError as err:
        assert repr(".".join(map(str, (*path[:-1], name))))[1:-1] in str(err) or name in str(err)
    else:
        raise AssertionError(f"renaming {path} to {name!r} was accepted")
