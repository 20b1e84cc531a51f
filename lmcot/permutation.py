"""Which axes of which tensors each hidden-unit permutation acts on, and how to apply it.

A :class:`PermutationSpec` is the one description of an architecture's permutation symmetry. Every
alignment method, the code that applies a permutation and the checks that a permutation is valid are
written against it, so a new architecture only has to say which axes its permutations act on.

Convention: a permutation ``perm`` of ``n`` units is a ``LongTensor`` of shape ``(n,)``; applying it
to model B along an axis puts B's unit ``perm[i]`` at position ``i``. Matching A to B therefore means
finding ``perm`` such that B's unit ``perm[i]`` plays the role of A's unit ``i``.

A permutation may act on contiguous *blocks* of an axis: ``blocks[(param, axis)] = b`` says that unit ``j`` of
``n`` occupies indices ``[j*b, (j+1)*b)`` of that axis, of length ``n*b`` (a Linear reading a flattened
``C x H x W`` map holds each channel as a block of ``H*W`` inputs). Applying and checking permutations, weight
matching, layer-by-layer alignment of the units after such an axis and the barycentre's transport handle
blocks; an axis 0 (the units' own rows) in blocks is refused by :func:`unit_parameters`.

A permutation may also keep *runs* of units together: ``groups[name] = (heads, size)`` says that permutation
``name`` maps each run of ``size`` consecutive units (an attention head's query/key or value/output dimensions)
onto a whole run and reorders units only within runs, and that every permutation of the same ``heads`` moves the
runs alike (the permutation of whole heads). Such a permutation is stored like any other, as the ``(n,)`` index
map it is; :func:`check_permutations` checks its structure, :func:`random_permutations` draws one, and
:func:`lmcot.align.assignment.assign` solves the group's permutations together (heads matched as units).

A permutation may act on a *section* of an axis: where one tensor packs the units of several permutations side by
side (``nn.MultiheadAttention``'s ``in_proj_weight`` stacks the query, key and value rows; a layer reading a
concatenation of channels), ``sections[param] = (axis, bounds)`` cuts ``param`` along ``axis`` at ``bounds`` (``(0,
E, 2 * E, 3 * E)``), and the spec names each part ``param[start:stop]`` (:func:`part_name`) as if it were a tensor of
its own. :meth:`PermutationSpec.split` cuts a state dict into those parts and :meth:`PermutationSpec.join` puts them
back; :func:`apply_permutations` does both, so a permuted state keeps the model's own keys.

A head group may also keep each run's order (``whole``): the input channels of a grouped convolution are read in
groups, so a permutation of them may move whole groups but not reorder a group's channels.

The spec also orders the layers from the input to the output: :func:`unit_parameters` says which tensors
of a layer's units can be compared once the layers before it are matched. Layer-by-layer alignment
(:mod:`lmcot.align.layerwise`), the Wasserstein barycentre (:mod:`lmcot.fusion`) and the dimension
estimates (:mod:`lmcot.dimension`) all walk the layers this way.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

StateDict = Mapping[str, torch.Tensor]
Permutations = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """``axes[name]`` lists the ``(parameter, axis)`` pairs that permutation ``name`` acts on; ``blocks`` maps a
    pair to its block size ``b`` when each unit occupies ``b`` contiguous indices of that axis (absent: 1)."""

    axes: Mapping[str, tuple[tuple[str, int], ...]]
    blocks: Mapping[tuple[str, int], int] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    sections: Mapping[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    whole: frozenset[str] = frozenset()

    def __post_init__(self):
        pairs = {pair for pairs in self.axes.values() for pair in pairs}
        for name in self.whole:
            if name not in self.groups:
                raise ValueError(f"permutation {name!r} keeps whole runs but is in no head group")
        for param, (axis, bounds) in self.sections.items():
            if len(bounds) < 3 or bounds[0] != 0 or any(b >= c for b, c in itertools.pairwise(bounds)):
                raise ValueError(f"sections of {param!r} along axis {axis} must cut it at increasing bounds from 0")
        for name, (heads, size) in self.groups.items():
            if name not in self.axes:
                raise ValueError(f"group {heads!r} names permutation {name!r}, which the spec lacks")
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"run size of permutation {name!r} must be a positive integer, not {size!r}")
        for pair, b in self.blocks.items():
            if pair not in pairs:
                raise ValueError(f"block size given for {pair!r}, which no permutation acts on")
            if not isinstance(b, int) or b < 1:
                raise ValueError(f"block size of {pair!r} must be a positive integer, not {b!r}")

    def split(self, state: StateDict) -> dict:
        """``state`` with every sectioned tensor replaced by its parts (views; :func:`part_name`); a state already
        split, or a spec without sections, gives ``state``'s entries as they are."""
        if not self.sections:
            return dict(state)
        split = {}
        for param, tensor in state.items():
            if param not in self.sections:
                split[param] = tensor
                continue
            axis, bounds = self.sections[param]
            if tensor.shape[axis] != bounds[-1]:
                raise ValueError(
                    f"{param!r} has {tensor.shape[axis]} entries on axis {axis}, its sections {bounds[-1]}"
                )
            for start, stop in itertools.pairwise(bounds):
                split[part_name(param, start, stop)] = tensor.narrow(axis, start, stop - start)
        return split

    def join(self, state: StateDict) -> dict:
        """The inverse of :meth:`split`: each sectioned tensor concatenated back from its parts, in ``state``'s
        order of keys (the parts' place is the first part's)."""
        if not self.sections:
            return dict(state)
        parts = {part_name(p, a, b): (p, axis) for p, (axis, bounds) in self.sections.items() for a, b in
                 itertools.pairwise(bounds)}  # fmt: skip
        joined = {}
        for key, tensor in state.items():
            if key not in parts:
                joined[key] = tensor
            elif parts[key][0] not in joined:
                param, axis = parts[key]
                bounds = self.sections[param][1]
                joined[param] = torch.cat([state[part_name(param, a, b)] for a, b in itertools.pairwise(bounds)], axis)
        return joined

    def block(self, param: str, axis: int) -> int:
        """How many contiguous indices of ``param``'s ``axis`` each unit occupies (1: one index per unit)."""
        return self.blocks.get((param, axis), 1)

    @property
    def names(self) -> list[str]:
        return list(self.axes)

    def head_groups(self) -> dict[str, list[str]]:
        """``{heads: [permutation names, in spec order]}``: the permutations that move whole runs alike."""
        groups = {}
        for name in self.names:
            if name in self.groups:
                groups.setdefault(self.groups[name][0], []).append(name)
        return groups

    def acting_on(self, param: str) -> dict[int, str]:
        """Map axis -> permutation name for one parameter (axes no permutation touches are absent)."""
        return {axis: name for name, pairs in self.axes.items() for p, axis in pairs if p == param}

    def sizes(self, state: StateDict) -> dict[str, int]:
        """Number of units of each permutation in ``state`` (an axis's length over its block size); raises if
        the spec does not fit it."""
        sizes, state = {}, self.split(state)
        for name, pairs in self.axes.items():
            if not pairs:
                raise ValueError(f"permutation {name!r} acts on no tensor")
            for param, axis in pairs:
                if param not in state:
                    raise KeyError(f"permutation {name!r} names parameter {param!r}, which the model lacks")
                tensor = state[param]
                if not -tensor.dim() <= axis < tensor.dim():
                    raise ValueError(f"permutation {name!r}: {param!r} has {tensor.dim()} axes, no axis {axis}")
                n, b = tensor.shape[axis], self.block(param, axis)
                if n % b:
                    raise ValueError(
                        f"permutation {name!r}: axis {axis} of {param!r} has {n} entries, not a multiple of its "
                        f"block size {b}"
                    )
                n //= b
                if sizes.setdefault(name, n) != n:
                    raise ValueError(
                        f"permutation {name!r} acts on axes of different sizes ({sizes[name]} and {n} at {param!r})"
                    )
        for heads, names in self.head_groups().items():
            counts = set()
            for name in names:
                runs, rest = divmod(sizes[name], self.groups[name][1])
                if rest:
                    raise ValueError(
                        f"permutation {name!r} has {sizes[name]} units, not a multiple of its run size "
                        f"{self.groups[name][1]}"
                    )
                counts.add(runs)
            if len(counts) > 1:
                raise ValueError(f"the permutations of group {heads!r} ({', '.join(names)}) have different run counts")
        return sizes


def check_permutations(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], state: StateDict) -> None:
    """Raise ``ValueError`` unless ``perms`` holds one valid permutation of the right size per spec entry."""
    sizes = spec.sizes(state)
    missing = set(sizes) - set(perms)
    extra = set(perms) - set(sizes)
    if missing or extra:
        raise ValueError(f"permutations do not match the spec: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, n in sizes.items():
        perm = torch.as_tensor(perms[name])
        if perm.shape != (n,) or not torch.equal(torch.sort(perm).values, torch.arange(n, device=perm.device)):
            raise ValueError(f"permutation {name!r} is not a permutation of {n} units")
    for heads, names in spec.head_groups().items():
        moves = [run_permutation(torch.as_tensor(perms[name]), spec.groups[name][1], name) for name in names]
        if any(not torch.equal(moves[0], move) for move in moves[1:]):
            raise ValueError(f"the permutations of group {heads!r} ({', '.join(names)}) move the runs differently")
        for name, move in zip(names, moves, strict=True):
            size = spec.groups[name][1]
            if name in spec.whole and not torch.equal(
                torch.as_tensor(perms[name]).cpu(), block_indices(move.cpu(), size)
            ):
                raise ValueError(f"permutation {name!r} reorders units within its runs of {size}, which it must keep")


def part_name(param: str, start: int, stop: int) -> str:
    """The name a spec gives the part ``[start, stop)`` of sectioned tensor ``param``."""
    return f"{param}[{start}:{stop}]"


def base_name(name: str) -> str:
    """The tensor a spec's name refers to: ``param`` for a part ``param[start:stop]``, else ``name`` itself."""
    return name.split("[", 1)[0] if name.endswith("]") else name


def run_permutation(perm: torch.Tensor, size: int, name: str = "the permutation") -> torch.Tensor:
    """The ``(n // size,)`` permutation of whole runs that ``perm`` (of ``n`` units, runs of ``size``) makes: run
    ``i`` of the result is ``perm``'s run ``heads[i]``. ``ValueError`` if ``perm`` splits a run."""
    runs = perm.reshape(-1, size).div(size, rounding_mode="floor")
    if not torch.equal(runs, runs[:, :1].expand_as(runs)):
        raise ValueError(f"{name} splits runs of {size} units (an attention head's dimensions)")
    return runs[:, 0]


def compose_runs(heads: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """The ``(h * size,)`` permutation that puts run ``heads[i]`` at run ``i``, its units in the order
    ``within[i]`` (``(h, size)``, each row a permutation of ``size``): unit ``i*size + j`` <- ``heads[i]*size +
    within[i, j]``."""
    size = within.shape[1]
    return (torch.as_tensor(heads)[:, None] * size + within).flatten()


def apply_permutations(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], state: StateDict) -> dict:
    """Return a new state dict with every permuted axis reordered; other tensors are shared, not copied. A
    sectioned tensor is permuted part by part and comes back whole (:meth:`PermutationSpec.split`)."""
    check_permutations(spec, perms, state)
    split = spec.split(state)
    permuted = OrderedDict(spec.join({param: permute_tensor(spec, perms, param, t) for param, t in split.items()}))
    if hasattr(state, "_metadata"):  # the modules' versions, which some modules' loading reads (torchvision's MNASNet)
        permuted._metadata = state._metadata
    return permuted


def permute_tensor(
    spec: PermutationSpec, perms: Mapping[str, torch.Tensor], param: str, tensor: torch.Tensor, skip_axis=None
) -> torch.Tensor:
    """Permute every axis of ``tensor`` that the spec names, except ``skip_axis``; a block axis moves whole
    blocks (``perm`` of shape ``(n,)`` on an axis of length ``n*b``). Returns a tensor of ``tensor``'s shape."""
    for axis, name in spec.acting_on(param).items():
        if axis != skip_axis:
            tensor = tensor.index_select(axis, block_indices(perms[name], spec.block(param, axis), tensor.device))
    return tensor


def block_indices(perm, b: int, device=None) -> torch.Tensor:
    """The ``(n*b,)`` indices that move block ``perm[i]`` (indices ``[perm[i]*b, (perm[i]+1)*b)``) to block ``i``;
    ``perm`` itself when ``b`` is 1."""
    perm = torch.as_tensor(perm, device=device)
    if b == 1:
        return perm
    return (perm[:, None] * b + torch.arange(b, device=perm.device)).flatten()


def identity_permutations(spec: PermutationSpec, state: StateDict) -> Permutations:
    return {name: torch.arange(n) for name, n in spec.sizes(state).items()}


def random_permutations(spec: PermutationSpec, state: StateDict, generator: torch.Generator) -> Permutations:
    """A uniformly random permutation per name; a group's permutations share one random move of whole runs."""
    sizes = spec.sizes(state)
    perms = {name: torch.randperm(n, generator=generator) for name, n in sizes.items() if name not in spec.groups}
    for names in spec.head_groups().values():
        runs = sizes[names[0]] // spec.groups[names[0]][1]
        heads = torch.randperm(runs, generator=generator)
        for name in names:
            size = spec.groups[name][1]
            if name in spec.whole:
                perms[name] = block_indices(heads, size)
                continue
            within = torch.stack([torch.randperm(size, generator=generator) for _ in range(runs)])
            perms[name] = compose_runs(heads, within)
    return {name: perms[name] for name in spec.names}


def invert_permutations(perms: Mapping[str, torch.Tensor]) -> Permutations:
    return {name: torch.argsort(torch.as_tensor(perm)) for name, perm in perms.items()}


def chain_spec(layers: list[str], prefix: str = "P") -> PermutationSpec:
    """Spec of a plain chain of layers ``layers[0] -> ... -> layers[-1]`` (Linear or Conv).

    Hidden layer ``i`` has output units permuted by ``{prefix}{i}``: its weight's axis 0, its bias and
    the input axis (axis 1) of the next layer's weight. The last layer's outputs (classes) stay fixed.
    """
    axes = {}
    for i, (layer, following) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        axes[f"{prefix}{i}"] = ((f"{layer}.weight", 0), (f"{layer}.bias", 0), (f"{following}.weight", 1))
    return PermutationSpec(axes)


# --- the layers from the input to the output ------------------------------------------------------


def unit_parameters(spec: PermutationSpec, name: str, solved) -> tuple[list[str], list[str]]:
    """The tensors that belong to the units of permutation ``name`` (its axis 0: incoming weights, biases,
    BatchNorm scales and statistics) and can be compared once the permutations ``solved`` are known, in spec
    order: ``(inputs, recurrent)``. ``inputs``: every other axis is a solved permutation's (the layer's inputs
    are aligned); ``recurrent``: the other axes also include ``name`` itself (hidden-to-hidden weights). A
    tensor with an input axis of a permutation not solved yet is in neither (a residual stream's later
    writers: the stream is matched on the first layer that writes to it).

    This is the walk from the input to the output that layer-by-layer alignment, the barycentre and the
    dimension estimates share."""
    inputs, recurrent = [], []
    for param, axis in spec.axes[name]:
        if axis != 0:
            continue
        _refuse_block_rows(spec, param, "layer-by-layer alignment, the barycentre and the dimension estimates")
        others = {n for a, n in spec.acting_on(param).items() if a != 0}
        if others <= set(solved):
            inputs.append(param)
        elif name in others and others <= {*solved, name}:
            recurrent.append(param)
    return inputs, recurrent


def incoming_matrices(spec: PermutationSpec, name: str, state, solved=None, recurrent: bool = False) -> list[str]:
    """The weight matrices whose axis 0 permutation ``name`` permutes and whose rows can be compared now.

    Biases are excluded. With ``solved`` (the permutations already found), a matrix is left out if another
    of its axes belongs to a permutation not yet solved, ``name`` itself included (recurrent weights): its
    rows cannot be compared yet. A residual stream is thus matched on the first layer that writes to it.
    ``recurrent`` also admits matrices whose other axes are ``name``'s own (hidden-to-hidden weights),
    listed after the others, so that the input-only rows are a column prefix of the rows with them.
    """
    state = spec.split(state)
    if solved is None:
        inputs, own = [p for p, axis in spec.axes[name] if axis == 0], []
        for p in inputs:
            _refuse_block_rows(spec, p, "incoming_matrices")
    else:
        inputs, own = unit_parameters(spec, name, solved)
    inputs = [p for p in inputs if state[p].dim() >= 2]  # biases and other per-unit vectors are not rows
    own = [p for p in own if state[p].dim() >= 2] if recurrent else []
    if not inputs:
        raise ValueError(f"permutation {name!r} permutes no weight matrix's output axis whose inputs are aligned")
    return inputs + own


def incoming_weights(
    spec: PermutationSpec, name: str, state, perms, solved=None, recurrent: bool = False
) -> torch.Tensor:
    """The weights that feed the units of permutation ``name``, one row per unit: ``(n, fan_in)``: the
    :func:`incoming_matrices` in that order, their other axes permuted by ``perms``, so that a layer
    of B is compared after its inputs were aligned. With ``recurrent``, the hidden-to-hidden columns come
    last, permuted by ``perms[name]`` itself."""
    matrices, state = incoming_matrices(spec, name, state, solved, recurrent), spec.split(state)
    return torch.cat([permute_tensor(spec, perms, p, state[p], skip_axis=0).flatten(1) for p in matrices], dim=1)


def _refuse_block_rows(spec: PermutationSpec, param: str, method: str) -> None:
    """``ValueError`` if ``param``'s axis 0 (its units' rows) is a block axis: ``method`` reads one row per unit."""
    if spec.block(param, 0) != 1:
        raise ValueError(f"block axes are not supported by {method} yet: axis 0 of {param!r} has blocks")


def has_recurrent_weights(spec: PermutationSpec) -> bool:
    """Whether some tensor has two axes permuted by the same permutation (hidden-to-hidden weights)."""
    params = {p for pairs in spec.axes.values() for p, _ in pairs}
    return any(len(set(spec.acting_on(p).values())) < len(spec.acting_on(p)) for p in params)
