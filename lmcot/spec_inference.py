"""Infer a model's :class:`~lmcot.permutation.PermutationSpec` from its torch.fx graph.

Every axis of every parameter is an *element* ``(name, axis)``; a module's buffers (BatchNorm's statistics) join
through its rule, and a buffer the graph reads itself, or a constant, is fixed. One pass over the traced graph
follows, for each intermediate tensor, which element's permutation each of its axes carries, and joins in one
class (union-find) the elements that one permutation must act on together:

- a Linear or Conv (or ``torch.addmm`` of a weight stored ``(in, out)``) produces a class: its weight's output
  axis and its bias; the input axis it reads joins its weight's input axis; an Embedding (module, or
  ``F.embedding`` of a table the model holds) produces one too: its weight's axis 1, the output's last axis;
- elementwise and broadcasting operations (activations, dropout, ``+ - * /``, softmax, casts, ``where``) join the
  operands' aligned axes: a residual addition merges the two streams' classes; ``expand`` keeps the axes;
- BatchNorm, LayerNorm and GroupNorm (modules or functions) keep the axes; their weights, biases and running
  statistics join the normalised axis;
- pooling keeps the channels; a sum, mean, max or min over an axis drops it (they are symmetric in it); indexing
  keeps whole axes and drops or fixes the others; a gather by a tensor of indices fixes the axis it reads;
- a view, reshape, flatten, squeeze or unsqueeze keeps a permuted axis when it survives intact (global
  pooling then flatten); one that merges a permuted axis with the unpermuted axes after it (a flatten of
  ``C x 7 x 7`` channels into a Linear) gives the merged axis blocks of ``7 * 7`` entries per unit, which the
  Linear's weight axis 1 then carries (:attr:`~lmcot.permutation.PermutationSpec.blocks`);
- a depthwise convolution carries its input's class; a grouped one, and a GroupNorm of several channels per
  group, make the classes move *runs* (groups) alike, as heads do
  (:attr:`~lmcot.permutation.PermutationSpec.groups`; a grouped convolution's inputs keep each run's order,
  :attr:`~lmcot.permutation.PermutationSpec.whole`);
- a view that splits a class's units into ``(heads, size)`` makes it move runs of ``size`` as the heads axis
  says; a matmul, einsum or ``F.scaled_dot_product_attention`` joins the axes it sums over (queries with keys)
  and the heads; merging ``(heads, size)`` back gives the class again;
- a concatenation along a permuted axis holds its parts side by side (*segments*): a tensor that reads it is
  cut into sections, one per part (:attr:`~lmcot.permutation.PermutationSpec.sections`); a ``split`` or
  ``chunk`` of a class's units cuts every tensor of the class into sections, each a class of its own (GPT-2's
  packed query, key and value); ``nn.MultiheadAttention`` reads its packed ``in_proj_weight`` in three
  sections, the query and key dimensions one class, the value dimensions with the output projection's inputs
  another, in the same heads; a transpose or permute of axes moves them;
- a module with a ``symmetry(prefix)`` method (:class:`lmcot.models.transformer.SelfAttention`) is not traced
  inside: it states the permutations within it (an attention's query/key and value/output dimensions and its
  heads, :attr:`~lmcot.permutation.PermutationSpec.groups`), which parameters read its input's last axis and
  which write its output's last axis; torchvision's Swin functions (wrapped for torch.fx) have rules of their own;
- the model's input and output are never permuted: their classes are fixed; heads that a tensor holds one entry
  each of (a bias per head) stay in place, and with them the units in their runs.

Each element has a block size relative to its class's root (a weighted union-find): joined elements must
carry the same units in the same block size. Anything else raises :class:`SpecInferenceError` naming the node:
an operation it does not know, a view that splits a permuted axis other than into heads or merges it with axes
before it or with other permuted axes, axes of one permutation joined in different block sizes or runs, a sum
over heads that keeps their dimensions. A model that torch.fx cannot trace symbolically (Python code that branches
on shapes, dtypes or optional arguments) is traced on the example input (:class:`_ConcreteTracer`); one whose
control flow depends on a tensor's value is refused. The model's hand-written ``permutation_spec()`` is then
needed.

Each class that contains a Linear/Conv output and is not fixed is one permutation, named after that
module's qualified name, in the order the modules first run (input to output, the order
:func:`lmcot.permutation.unit_parameters` walks); a module's own permutations come where it runs.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.fx._symbolic_trace import _maybe_revert_all_patches
from torch.nn import functional as F
from torch.utils import _pytree as pytree
from torchvision import ops as torchvision_ops
from torchvision.models import swin_transformer

from lmcot.errors import UserError
from lmcot.permutation import PermutationSpec, base_name, part_name

Element = tuple[str, int]  # (parameter or buffer name, axis)
FIXED: Element = ("", -1)  # the class of the axes no permutation may touch: the input's, the output's


class SpecInferenceError(UserError):
    """The graph holds something the inference cannot reason about; the message names the node."""


class BlockConflict(ValueError):
    """Elements joined in one class would carry its units in different block sizes."""


class UnionFind:
    """Classes of elements; :data:`FIXED` is the root of its class, and members keep the order first seen.

    Each element also has a block size relative to its parent (``factor``): an element of block size ``b``
    relative to the root holds each of the root's units as ``b`` contiguous entries. Joined elements have the
    same block size; a fixed class's block sizes do not matter."""

    def __init__(self):
        self.parent: dict[Element, Element] = {FIXED: FIXED}
        self.factor: dict[Element, int] = {FIXED: 1}
        # root -> (heads, run size, whole): the class moves runs of that many units as its heads element says
        self.runs: dict[Element, tuple[Element, int, bool]] = {}

    def find(self, element: Element) -> Element:
        self.parent.setdefault(element, element)
        self.factor.setdefault(element, 1)
        path = []
        while self.parent[element] != element:
            path.append(element)
            element = self.parent[element]
        for e in reversed(path):  # nearest the root first: its parent then already points at the root
            if self.parent[e] != element:
                self.factor[e] *= self.factor[self.parent[e]]
            self.parent[e] = element
        return element

    def block(self, element: Element) -> int:
        """The element's block size relative to its class's root."""
        self.find(element)
        return self.factor[element]

    def attach(self, element: Element, to: Element, block: int) -> None:
        """Add the new ``element`` to ``to``'s class, with block size ``block`` relative to ``to``."""
        self.parent[element], self.factor[element] = self.find(to), block * self.block(to)

    def union(self, *elements: Element) -> Element:
        """Join the elements' classes (of the same block size); returns the first element."""
        for other in elements[1:]:
            self._join(elements[0], other)
        return elements[0]

    def _join(self, x: Element, y: Element) -> None:
        (rx, fx), (ry, fy) = (self.find(x), self.block(x)), (self.find(y), self.block(y))
        if rx == ry:
            if rx != FIXED and fx != fy:
                raise BlockConflict(f"it joins {x} and {y}, blocks of {fx} and {fy} entries of the same units")
        elif FIXED in (rx, ry):
            self.parent[rx], self.parent[ry] = FIXED, FIXED
            for root in (rx, ry):
                if root in self.runs:  # a fixed class moves no runs: its heads stay where they are
                    self._join(self.runs.pop(root)[0], FIXED)
        elif fx % fy == 0:
            self.parent[ry], self.factor[ry] = rx, fx // fy
            self._move_runs(ry, rx)
        elif fy % fx == 0:
            self.parent[rx], self.factor[rx] = ry, fy // fx
            self._move_runs(rx, ry)
        else:
            raise BlockConflict(f"it joins {x} and {y}, blocks of {fx} and {fy} entries of units")

    def set_runs(self, element: Element, heads: Element, size: int, whole: bool) -> None:
        """The class of ``element`` moves runs of ``size`` of its entries as ``heads`` moves (``whole``: and keeps
        each run's order); a fixed class fixes ``heads``."""
        root, b = self.find(element), self.block(element)
        if root == FIXED:
            self._join(heads, FIXED)
        elif size % b:
            raise BlockConflict(f"runs of {size} entries split the blocks of {b} entries of {element}")
        else:
            self._merge_runs(root, (heads, size // b, whole))

    def _move_runs(self, child: Element, root: Element) -> None:
        if child in self.runs:
            if self.factor[child] != 1:
                raise BlockConflict(f"it joins runs of {child} to {root} in blocks of {self.factor[child]}")
            self._merge_runs(root, self.runs.pop(child))

    def _merge_runs(self, root: Element, runs: tuple[Element, int, bool]) -> None:
        if root not in self.runs:
            self.runs[root] = runs
            return
        (heads, size, whole), (other, other_size, other_whole) = self.runs[root], runs
        if size != other_size:
            raise BlockConflict(f"it joins units moved in runs of {size} and of {other_size}")
        self._join(heads, other)
        self.runs[root] = (heads, size, whole or other_whole)

    def permuted(self, element: Element) -> bool:
        """Whether the class may still be permuted (it is not fixed so far)."""
        return self.find(element) != FIXED

    def members(self, element: Element) -> list[Element]:
        root = self.find(element)
        return [e for e in self.parent if e != FIXED and self.find(e) == root]


# --- what the pass knows -------------------------------------------------------------------------------------

_ELEMENTWISE_MODULES = (
    *(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU, nn.CELU),
    *(nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity),
    *(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax),
)
_ELEMENTWISE_FUNCTIONS = {
    *(operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.iadd, operator.imul),
    *(torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.abs, torch.exp, torch.clamp),
    *(torch.relu, torch.sigmoid, torch.tanh, torch.softmax, torch.log_softmax, torch.maximum, torch.minimum),
    *(F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.elu, F.hardtanh, F.hardswish, F.softplus),
    *(F.sigmoid, F.tanh, F.dropout, F.softmax, F.log_softmax, F.hardsigmoid, F.silu),
    *(operator.pow, torch.pow, torch.sqrt, torch.rsqrt, torch.where, torch.masked_fill, torch.erf, torch.square),
    *(operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne, operator.invert, operator.and_),
    operator.or_,
    torchvision_ops.stochastic_depth,  # in training, a random 0 or 1 / (1 - p) per sample or per batch
}
_ELEMENTWISE_METHODS = {
    *("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "exp", "clamp", "clamp_"),
    *("relu", "relu_", "sigmoid", "tanh", "softmax", "log_softmax", "contiguous", "clone", "detach"),
    *("to", "type", "type_as", "float", "double", "half", "bfloat16", "pow", "sqrt", "rsqrt", "masked_fill"),
    *("gelu", "silu", "square", "erf", "gt", "ge", "lt", "le", "eq", "ne", "logical_not", "bool"),
}
# pooling over the last d axes (d: 1, 2, 3), as a function or a module
_POOL_FUNCTIONS = {
    getattr(F, f"{kind}_pool{d}d"): d
    for kind in ("max", "avg", "adaptive_max", "adaptive_avg", "lp")
    for d in (1, 2, 3)
    if hasattr(F, f"{kind}_pool{d}d")
}
_POOL_MODULES = {
    getattr(nn, f"{kind}Pool{d}d"): d
    for kind in ("Max", "Avg", "AdaptiveMax", "AdaptiveAvg", "LP")
    for d in (1, 2, 3)
    if hasattr(nn, f"{kind}Pool{d}d")
}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_REDUCTIONS = {torch.sum, torch.mean, torch.amax, torch.amin, "sum", "mean", "amax", "amin"}
_CONCATENATIONS = {torch.cat, torch.concat}
_TRANSPOSES = {torch.transpose, torch.swapaxes, torch.movedim, torch.permute, "transpose", "swapaxes", "movedim"}
_TRANSPOSES |= {"permute"}
_EXPANSIONS = {"expand", "expand_as", torch.broadcast_to}
_MATRIX_PRODUCTS = {torch.matmul, operator.matmul, "matmul", torch.bmm, "bmm"}
_SPLITS = {torch.split, torch.chunk, "split", "chunk"}
_SWIN = {
    swin_transformer.shifted_window_attention: "window_attention",
    swin_transformer._get_relative_position_bias: "position_bias",
    swin_transformer._patch_merging_pad: "patch_merging",
}
_NEW_TENSORS = {"new_zeros", "new_ones", "new_full", "new_empty", torch.zeros_like, torch.ones_like, torch.full_like}
_METADATA = {"size", "dim", getattr, operator.getitem}  # results that are not tensors (shapes, sizes)


def infer_spec(model: nn.Module, example_input: torch.Tensor) -> PermutationSpec:
    """The permutation spec of ``model``, read from its graph traced by torch.fx.

    ``example_input``: a batch ``(batch, *input_shape)`` the model runs on once, in eval mode and without
    gradients (its training flags are restored), to learn every intermediate tensor's shape."""
    graph_module = _trace(model, example_input)
    shapes, items = _shapes(graph_module, example_input)
    state = model.state_dict()
    inference = _Inference(graph_module, shapes, set(state), items)
    for node in graph_module.graph.nodes:
        inference.visit(node)
    spec = inference.spec()
    try:  # a rule that joined axes of different lengths (a comparison of heads of other sizes) gives no permutation
        spec.sizes(state)
    except (KeyError, ValueError) as error:
        raise SpecInferenceError(
            f"cannot infer the permutation spec: {error.args[0]}. Write the model's permutation_spec() by hand."
        ) from None
    return spec


class _Inference:
    """The one pass: ``axes[node]`` holds one element per axis of the node's tensor (None if not a tensor)."""

    def __init__(self, graph_module: fx.GraphModule, shapes: dict, state: set[str], item_shapes: dict | None = None):
        self.module, self.shapes, self.state = graph_module, shapes, state
        self.parameters = {name for name, _ in graph_module.named_parameters()}
        self.classes = UnionFind()
        self.axes: dict[fx.Node, list[Element] | None] = {}
        self.producers: dict[Element, str] = {}  # Linear/Conv weight axis 0 -> module name, in running order
        self.inner: dict[Element, PermutationSpec] = {}  # a module's own permutations, where it runs
        # a concatenated axis -> its parts' (element, entries), side by side
        self.segments: dict[Element, list[tuple[Element, int]]] = {}
        self.sections: dict[str, tuple[int, tuple[int, ...]]] = {}  # a tensor read part by part: (axis, bounds)
        self.items: dict[fx.Node, list] = {}  # a module returning a tuple: the axes of each item
        # an axis of one head's dimensions, split from a class's units (``view(B, T, heads, size)``) -> that class
        self.within: dict[Element, Element] = {}
        self.dissolved: set[Element] = set()  # classes cut into sections (:meth:`cut`): no permutation of their own
        self.item_shapes: dict[fx.Node, list[tuple[int, ...]]] = item_shapes or {}  # a split's pieces

    def spec(self) -> PermutationSpec:
        self.fix_unmoved_runs()
        axes, blocks, groups, runs, whole, seen = {}, {}, {}, {}, set(), set()
        for element, name in self.producers.items():
            if element in self.inner:
                axes.update(self.inner[element].axes)
                groups.update(self.inner[element].groups)
                continue
            root = self.classes.find(element)
            if root != FIXED and root not in seen and root not in self.dissolved:
                seen.add(root)
                # a tensor cut into sections is named by its parts only (the whole may have joined before the cut)
                axes[name] = tuple(
                    e for e in self.classes.members(root) if not _merged(e) and e[0] not in self.sections
                )
                # the finest units every named tensor moves whole: the producers' units may be runs of another
                # tensor's (channels x positions flattened into a Linear's units), whichever came first
                unit = math.gcd(*(self.classes.block(e) for e in axes[name])) or 1
                if root in self.classes.runs:
                    heads, size, keep = self.classes.runs[root]
                    if unit != 1:
                        raise SpecInferenceError(
                            f"cannot infer the permutation spec: the units of module {name!r} move in runs and in "
                            f"blocks of {unit} entries at once. Write the model's permutation_spec() by hand."
                        )
                    runs[name] = (self.classes.find(heads), size)
                    if keep:
                        whole.add(name)
                for e in axes[name]:
                    if self.classes.block(e) > unit:
                        blocks[e] = self.classes.block(e) // unit
        # a group is named after its heads' tensor, and after the axis too where one view made several
        tensors = [heads[0] for heads in {heads for heads, _ in runs.values()}]
        for name, ((tensor, axis), size) in runs.items():
            groups[name] = (f"{tensor} axis {axis}" if tensors.count(tensor) > 1 else tensor, size)
        sections = {
            p: v for p, v in self.sections.items() if any(base_name(e[0]) == p for ps in axes.values() for e in ps)
        }
        return PermutationSpec(axes, blocks, groups, sections, frozenset(whole))

    def fix_unmoved_runs(self) -> None:
        """A class whose heads may not move is fixed: its units may not leave their runs, and a head group is
        all or nothing (every class of fixed heads, fixed)."""
        for heads, _, _ in list(self.classes.runs.values()):  # a tensor with one entry per head: no spec moves it
            if any(not _merged(e) for e in self.classes.members(heads)):
                self.classes.union(FIXED, heads)
        changed = True
        while changed:
            changed = False
            for root, (heads, _, _) in list(self.classes.runs.items()):
                if not self.classes.permuted(heads):
                    self.classes.union(FIXED, root)
                    changed = True

    def visit(self, node: fx.Node) -> None:
        shape = self.shapes.get(node)
        tensors = [n for n in node.all_input_nodes if self.axes.get(n) is not None]
        if node.op == "output":  # every tensor returned, also the items of a tuple returned whole
            for n in node.all_input_nodes:
                for axes in self.items.get(n, [self.axes.get(n)]):
                    for element in axes or []:
                        self.join(FIXED, element)
            return
        if node.op == "call_module" and isinstance(self.module.get_submodule(node.target), nn.MultiheadAttention):
            try:
                self.items[node] = self.multihead_attention(node, self.module.get_submodule(node.target))
            except BlockConflict as conflict:
                raise self.refusal(node, str(conflict)) from None
            self.axes[node] = None
        elif node.target in _SPLITS and self.axes.get(node.args[0]) is not None:
            try:
                self.items[node] = self.split(node)
            except BlockConflict as conflict:
                raise self.refusal(node, str(conflict)) from None
            self.axes[node] = None
        elif node.target is operator.getitem and node.args[0] in self.items:  # an item of a module's tuple
            self.axes[node] = self.items[node.args[0]][node.args[1]]
        elif any(n in self.items for n in node.all_input_nodes):
            raise self.refusal(node, "it reads a tuple of tensors whole; index its items first")
        elif shape is None:  # a size, a shape or a tuple
            if tensors and node.target not in _METADATA:
                raise self.refusal(node, "it returns no single tensor (a number, or a tuple of tensors)")
            self.axes[node] = None
        elif node.op == "get_attr":  # a parameter's axes are its own elements; a buffer's or a constant's are fixed
            own = node.target in self.parameters
            self.axes[node] = [(node.target, a) if own and n > 1 else FIXED for a, n in enumerate(shape)]
        elif node.op == "placeholder" or not tensors:  # the input, or a tensor made from no tensor
            self.axes[node] = [FIXED] * len(shape)
        else:
            try:
                if node.op == "call_module":
                    self.axes[node] = self.module_rule(node, self.module.get_submodule(node.target))
                else:
                    self.axes[node] = self.function_rule(node)
            except BlockConflict as conflict:
                raise self.refusal(node, str(conflict)) from None

    # --- the rules -----------------------------------------------------------------------------------------

    def module_rule(self, node: fx.Node, module: nn.Module) -> list[Element]:
        x = self.axes[node.all_input_nodes[0]]
        if _states_symmetry(module):
            return self.own_symmetry(node, module, x)
        if isinstance(module, nn.Linear):  # (..., in) -> (..., out)
            self.read(x[-1], self.param(node, "weight"), 1)
            return [*x[:-1], self.produce(node, module)]
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):  # ([batch,] in, *spatial) -> (..., out, *spatial)
            d = len(module.kernel_size)
            channels = len(x) - d - 1
            self.require_fixed(node, x, range(channels + 1, len(x)), "a convolution mixes its spatial axes")
            if module.groups == 1:
                self.read(x[channels], self.param(node, "weight"), 1)
                return [*x[:channels], self.produce(node, module), *[FIXED] * d]
            return [*x[:channels], self.grouped_convolution(node, module, x[channels]), *[FIXED] * d]
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm | nn.GroupNorm):
            names = ("weight", "bias", "running_mean", "running_var")  # (batch, channels, ...)
            params = [self.param(node, n) for n in names if getattr(module, n, None) is not None]
            groups = module.num_groups if isinstance(module, nn.GroupNorm) else None
            self.normalise(x[1], self.shapes[node][1], params, groups)
            return x
        if isinstance(module, nn.LayerNorm):  # normalises the last len(normalized_shape) axes
            params = [self.param(node, n) for n in ("weight", "bias") if getattr(module, n, None) is not None]
            self.layer_norm(x, len(module.normalized_shape), params)
            return x
        if isinstance(module, nn.Embedding):  # indices (fixed) -> (..., dim): the weight's axis 1 is the output's
            columns = (self.param(node, "weight"), 1)
            self.producers.setdefault(columns, node.target)
            return [*x, columns]
        if isinstance(module, nn.PReLU) and module.num_parameters > 1:  # one slope per channel (axis 1)
            self.read(x[1], self.param(node, "weight"), 0)
            return x
        if isinstance(module, _ELEMENTWISE_MODULES):
            return self.elementwise(node)
        if type(module) in _POOL_MODULES:
            return self.pool(node, _POOL_MODULES[type(module)])
        if isinstance(module, nn.Flatten | nn.Unflatten):
            return self.reshape(node)
        raise self.refusal(node, "a module the inference does not know")

    def function_rule(self, node: fx.Node) -> list[Element]:
        target = node.target
        if target in _ELEMENTWISE_FUNCTIONS or target in _ELEMENTWISE_METHODS:
            return self.elementwise(node)
        if target in _POOL_FUNCTIONS:
            return self.pool(node, _POOL_FUNCTIONS[target])
        if target in _RESHAPE_FUNCTIONS or target in _RESHAPE_METHODS:
            return self.reshape(node)
        if target in _REDUCTIONS:
            return self.reduction(node)
        if target in _CONCATENATIONS:
            return self.concatenation(node)
        if target in _TRANSPOSES:
            return self.transpose(node)
        if target in _NEW_TENSORS:  # made from the operand's shape and dtype only: constant axes
            return [FIXED] * len(self.shapes[node])
        if target in _EXPANSIONS:
            return self.expansion(node)
        if target is operator.getitem:
            return self.indexing(node)
        if target in _MATRIX_PRODUCTS:
            return self.matrix_product(node)
        # torch.nn.functional hands torch.fx the tensor and the next arguments by position, weight and bias of the
        # norms by keyword (its handle_torch_function calls), however the model spelled them
        if target is F.embedding:  # (indices, weight)
            columns = self.axes[node.args[1]][1]
            if columns == (node.args[1].target, 1):  # a table the model holds, not a computed one
                self.producers.setdefault(columns, _holder(columns[0]))
            return [*self.axes[node.args[0]], columns]
        if target is torch.addmm:  # bias + x @ weight, weight (in, out): a Linear stored transposed (GPT-2's Conv1D)
            return self.transposed_linear(node)
        if target is F.scaled_dot_product_attention:
            return self.attention(node)
        if target is torch.einsum:
            return self.einsum(node)
        if target in _SWIN:  # torchvision wraps these for torch.fx: one node each
            return getattr(self, _SWIN[target])(node)
        if target is F.layer_norm:  # (x, normalized_shape, weight=, bias=, eps=): a tuple of ints (or a Size)
            self.layer_norm(self.axes[node.args[0]], len(node.args[1]), self.affine(node))
            return self.axes[node.args[0]]
        if target is F.group_norm:  # (x, num_groups, weight=, bias=, eps=): channels on axis 1
            x, channels = self.axes[node.args[0]], self.shapes[node][1]
            self.normalise(x[1], channels, self.affine(node), node.args[1])
            return x
        raise self.refusal(node, "an operation the inference does not know")

    def grouped_convolution(self, node: fx.Node, module: nn.Module, x: Element) -> Element:
        """A convolution of ``g`` groups: group ``i`` of its outputs reads group ``i`` of its inputs only. A depthwise
        one (as many groups as input and output channels) carries its input's permutation; otherwise a
        permutation may move whole groups, alike on both sides, and reorder the outputs within a group but not
        the inputs (the weight holds each group's inputs in their order)."""
        g, weight = module.groups, self.param(node, "weight")
        if x in self.segments:
            raise self.refusal(node, "a grouped convolution reading a concatenation")
        if module.in_channels == module.out_channels == g:
            bias = [(self.param(node, "bias"), 0)] if module.bias is not None else []
            self.classes.union(x, (weight, 0), *bias)
            return x
        heads = (f"<{node.target} groups>", 0)
        self.classes.set_runs(x, heads, module.in_channels // g, whole=True)
        out = self.produce(node, module)
        self.classes.set_runs(out, heads, module.out_channels // g, whole=False)
        return out

    def normalise(self, channels: Element, count: int, params: list[str], groups: int | None) -> None:
        """BatchNorm or GroupNorm over ``count`` ``channels``: its per-channel tensors join them. A GroupNorm of
        several channels per group normalises each group alone: a permutation may move whole groups and reorder
        channels within them."""
        for param in params:
            self.read(channels, param, 0)
        if groups not in (None, 1, count) and self.permuted(channels):
            if channels in self.segments:
                raise BlockConflict("a GroupNorm of several channels per group reads a concatenation")
            heads = (f"<{params[0] if params else channels[0]} groups>", 0)
            self.classes.set_runs(channels, heads, count // groups, whole=False)

    def affine(self, node: fx.Node) -> list[str]:
        """The parameters (or buffers) a functional norm gets as ``weight`` and ``bias`` (keywords of the node)."""
        params = []
        for name in ("weight", "bias"):
            given = node.kwargs.get(name)
            if isinstance(given, fx.Node):
                if given.op != "get_attr" or given.target not in self.state:
                    raise self.refusal(node, f"its {name} is computed, not a tensor of the model's state dict")
                params.append(given.target)
        return params

    def layer_norm(self, x: list[Element], k: int, params: list[str]) -> None:
        """A layer norm over the last ``k`` axes of ``x``: its weight's and bias's axes join them (statistics over
        an axis do not depend on its order)."""
        for i, axis in enumerate(range(len(x) - k, len(x))):
            for param in params:
                self.read(x[axis], param, i)

    def own_symmetry(self, node: fx.Node, module: nn.Module, x: list[Element]) -> list[Element]:
        """A module that states its symmetry: ``(..., in) -> (..., out)``, its inner permutations kept as stated."""
        inner, reads, writes = module.symmetry(node.target)
        for param, _ in (*reads, *writes, *(pair for pairs in inner.axes.values() for pair in pairs)):
            if param not in self.state:
                raise self.refusal(node, f"its symmetry names {param!r}, which is not in the state dict")
        if x[-1] in self.segments:
            raise BlockConflict("a module that states its symmetry reads a concatenation")
        self.classes.union(x[-1], *reads)
        inside = (f"<{node.name}>", 0)  # where the module's own permutations come in the running order
        self.producers[inside], self.inner[inside] = node.target, inner
        self.producers.setdefault(writes[0], node.target)
        return [*x[:-1], self.classes.union(*writes)]

    def transpose(self, node: fx.Node) -> list[Element]:
        """A transpose, permute or movedim reorders the axes."""
        x = self.axes[node.all_input_nodes[0]]
        n = len(x)
        if node.target in (torch.permute, "permute"):
            dims = node.args[1:] if not isinstance(_argument(node, 1, "dims", None), tuple | list) else node.args[1]
            order = [d % n for d in dims]
        else:
            order = list(range(n))
            source, destination = _argument(node, 1, "dim0", None), _argument(node, 2, "dim1", None)
            if node.target in (torch.movedim, "movedim"):
                source, destination = _argument(node, 1, "source", None), _argument(node, 2, "destination", None)
                if not (isinstance(source, int) and isinstance(destination, int)):
                    raise self.refusal(node, "a movedim of several axes")
                order.insert(destination % n, order.pop(source % n))
            else:
                order[source % n], order[destination % n] = order[destination % n], order[source % n]
        return [x[a] for a in order]

    def produce(self, node: fx.Node, module: nn.Module) -> Element:
        """A Linear/Conv's output units: its weight's axis 0 (every part, where it reads a concatenation) and its
        bias."""
        weight = self.elements(self.param(node, "weight"), 0)
        self.producers.setdefault(weight[0], node.target)
        bias = [(self.param(node, "bias"), 0)] if module.bias is not None else []
        return self.classes.union(*weight, *bias)

    def elementwise(self, node: fx.Node) -> list[Element]:
        """Broadcasting: every operand's axis aligned with an output axis (its size not 1) joins that axis."""
        out: list[Element | None] = [None] * len(self.shapes[node])
        for operand in node.all_input_nodes:
            if self.axes[operand] is None:
                continue
            offset = len(out) - len(self.shapes[operand])
            for axis, (size, element) in enumerate(zip(self.shapes[operand], self.axes[operand], strict=True)):
                if size > 1:
                    k = axis + offset
                    out[k] = element if out[k] is None else self.join(out[k], element)
        return [FIXED if e is None else e for e in out]

    def pool(self, node: fx.Node, d: int) -> list[Element]:
        """Pooling over the last ``d`` axes keeps the others."""
        x = self.axes[node.all_input_nodes[0]]
        self.require_fixed(node, x, range(len(x) - d, len(x)), "pooling mixes the positions it pools")
        return [*x[: len(x) - d], *[FIXED] * d]

    def reshape(self, node: fx.Node) -> list[Element]:
        """A permuted axis survives a reshape when the axes before it hold as many entries before and after
        and its size is unchanged (so it is not split or merged with an axis of size > 1). Merged with the
        unpermuted axes after it into one axis (it outermost), it becomes a block axis: each of its entries
        is a block of as many entries as those axes hold."""
        x = self.axes[node.all_input_nodes[0]]
        before, after = self.shapes[node.all_input_nodes[0]], self.shapes[node]
        out, merged_heads = [FIXED] * len(after), set()
        for a, element in enumerate(x):
            if before[a] == 1 or not self.permuted(element) or a in merged_heads:
                continue
            start = [b for b in range(len(after)) if math.prod(after[:b]) == math.prod(before[:a])]
            same = [b for b in start if after[b] == before[a]]
            if same:
                out[same[0]] = element
                continue
            if element in self.segments:
                raise self.refusal(node, f"it merges a concatenated axis {a} with other axes")
            if a + 1 < len(x) and x[a + 1] in self.within:  # heads merged back: (..., heads, size) -> (..., units)
                b = next((b for b in start if after[b] == before[a] * before[a + 1]), None)
                units = self.within[x[a + 1]]
                runs = self.classes.runs.get(self.classes.find(units))
                if b is None or runs is None or self.classes.find(runs[0]) != self.classes.find(element):
                    raise self.refusal(node, f"it merges axes {a} and {a + 1}, which are not one class's heads")
                out[b] = units
                merged_heads.add(a + 1)
                continue
            split = [b for b in start if b + 1 < len(after) and after[b] * after[b + 1] == before[a]]
            if split and element not in self.within and after[split[0]] > 1 and after[split[0] + 1] > 1:
                # units split into heads: the class moves runs of a head's dimensions, as its heads axis says
                b = split[0]
                out[b], out[b + 1] = (f"<{node.name}>", b), (f"<{node.name}>", b + 1)
                self.within[out[b + 1]] = element
                self.classes.set_runs(element, out[b], after[b + 1], whole=False)
                continue
            merged = [  # (axis of the result, the number of axes after a merged into it)
                (b, k)
                for b in start
                for k in range(1, len(before) - a)
                if after[b] == math.prod(before[a : a + k + 1])
                and not any(self.permuted(e) for e in x[a + 1 : a + k + 1])
            ]
            if not merged:
                raise self.refusal(
                    node,
                    f"it mixes permuted axis {a} ({before[a]} units) with other axes of size > 1 "
                    f"({list(before)} -> {list(after)}) other than by merging it with the unpermuted axes after it: "
                    "a permutation of those units would act on parts of the result, which a PermutationSpec "
                    "cannot express",
                )
            b, k = merged[0]
            out[b] = (f"<{node.name}>", b)  # the merged axis: a block of prod(before[a+1 : a+k+1]) per unit
            self.classes.attach(out[b], element, math.prod(before[a + 1 : a + k + 1]))
        return out

    def reduction(self, node: fx.Node) -> list[Element]:
        """A sum, mean, max or min over some axes is symmetric in them: they drop out (or stay fixed, size 1)."""
        x = self.axes[node.all_input_nodes[0]]
        dim = _argument(node, 1, "dim", None)
        keepdim = _argument(node, 2, "keepdim", False)
        if dim is None or dim == []:
            dim = range(len(x))
        elif isinstance(dim, int):
            dim = [dim]
        elif not all(isinstance(d, int) for d in dim):
            raise self.refusal(node, f"a reduction over axes the model computes ({', '.join(map(str, dim))})")
        reduced = {d % len(x) for d in dim}
        heads = {self.classes.find(h) for h, _, _ in self.classes.runs.values()}
        if any(self.classes.find(x[a]) in heads for a in reduced) and any(
            x[a] in self.within for a in range(len(x)) if a not in reduced
        ):  # each head's dimensions are reordered on their own: a sum over heads would mix the orders
            raise self.refusal(node, "it reduces over heads and keeps their dimensions")
        return [FIXED if a in reduced else e for a, e in enumerate(x) if keepdim or a not in reduced]

    def concatenation(self, node: fx.Node) -> list[Element]:
        """The operands' other axes join; the concatenated axis carries each operand's units side by side (a
        segment each), or is fixed where none is permuted."""
        operands = _argument(node, 0, "tensors", ())
        dim = _argument(node, 1, "dim", 0) % len(self.shapes[node])
        out = [
            self.join(*[self.axes[n][a] for n in operands]) if a != dim else FIXED
            for a in range(len(self.shapes[node]))
        ]
        segments = [piece for n in operands for piece in self.pieces(self.axes[n][dim], self.shapes[n][dim])]
        if not any(self.classes.permuted(e) for e, _ in segments):
            out[dim] = FIXED
        elif len(segments) == 1:
            out[dim] = segments[0][0]
        else:
            out[dim] = (f"<{node.name}>", dim)
            self.segments[out[dim]] = segments
        return out

    def expansion(self, node: fx.Node) -> list[Element]:
        """``expand``/``expand_as``/``broadcast_to``: axes kept at their size keep their units; axes grown from
        size 1 or added in front hold copies, so they are fixed."""
        x, before, after = self.axes[node.args[0]], self.shapes[node.args[0]], self.shapes[node]
        offset = len(after) - len(before)
        return [FIXED] * offset + [e if before[a] == after[a + offset] else FIXED for a, e in enumerate(x)]

    def indexing(self, node: fx.Node) -> list[Element]:
        """``x[...]`` with integers, full or partial slices, ``None``, ``...`` and one tensor of indices: an integer
        drops its axis, a slice keeps it, a tensor replaces it by its own axes; only whole slices may touch a
        permuted axis (a part of the units is no permutation's)."""
        x, shape = self.axes[node.args[0]], self.shapes[node.args[0]]
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = (*index[:at], *[slice(None)] * (len(x) - len(index) + 1 + index.count(None)), *index[at + 1 :])
        if sum(isinstance(item, fx.Node) for item in index) > 1:
            raise self.refusal(node, "an index by several tensors")
        out, axis = [], 0
        for item in index:
            if item is None:
                out.append(FIXED)
                continue
            if isinstance(item, fx.Node):  # a gather along an unpermuted axis (a table of relative positions)
                if self.permuted(x[axis]) and {e[0] for e in self.classes.members(x[axis])} != {x[axis][0]}:
                    raise self.refusal(node, f"it gathers entries of permuted axis {axis} by a tensor of indices")
                self.join(FIXED, x[axis])  # a parameter's own axis, read by position: it stays in place
                out += [FIXED] * len(self.shapes[item])
                axis += 1
                continue
            whole = isinstance(item, slice) and slice(*item.indices(shape[axis])) == slice(0, shape[axis], 1)
            if not (isinstance(item, int | slice)):
                raise self.refusal(node, f"an index by {'list' if isinstance(item, list) else type(item).__name__}")
            if self.permuted(x[axis]) and not whole:
                raise self.refusal(node, f"it indexes part of permuted axis {axis}")
            if isinstance(item, slice):
                out.append(x[axis] if whole else FIXED)
            axis += 1
        return out + x[axis:]

    def transposed_linear(self, node: fx.Node) -> list[Element]:
        """``torch.addmm(bias, x, weight)`` with parameters ``weight`` ``(in, out)`` and ``bias`` ``(out,)``: the
        weight's axis 0 reads ``x``'s last axis, its axis 1 and the bias are the output's units, named after the
        module that holds the weight."""
        bias, x, weight = (node.args[i] for i in range(3))
        if not all(isinstance(n, fx.Node) and n.op == "get_attr" for n in (bias, weight)):
            raise BlockConflict("an addmm of computed tensors, not a layer's weight and bias")
        self.read(self.axes[x][-1], weight.target, 0)
        out = self.classes.union(*self.elements(weight.target, 1), *self.elements(bias.target, 0))
        self.producers.setdefault(out, _holder(weight.target))
        return [self.axes[x][0], out]

    def split(self, node: fx.Node) -> list[list[Element]]:
        """``split``/``chunk`` along an axis: the pieces' axes. Along a permuted axis, the units the pieces hold
        become permutations of their own (GPT-2 packs queries, keys and values in one layer's outputs): every tensor
        of the class is cut into those sections."""
        x, dim = self.axes[node.args[0]], _argument(node, 2, "dim", 0)
        dim %= len(x)
        sizes = [shape[dim] for shape in self.item_shapes[node]]
        if not self.permuted(x[dim]):
            return [[*x[:dim], FIXED, *x[dim + 1 :]] for _ in sizes]
        pieces = self.cut(x[dim], sizes)
        return [[*x[:dim], piece, *x[dim + 1 :]] for piece in pieces]

    def cut(self, element: Element, sizes: list[int]) -> list[Element]:
        """The class of ``element`` cut into sections of ``sizes`` units: each tensor axis of the class into parts,
        each section a class of its own (named after the class's producer and the section); ``element`` itself
        becomes their concatenation."""
        if element in self.segments or element in self.within:
            raise BlockConflict("a split of a concatenated or head axis")
        root = self.classes.find(element)
        members = self.classes.members(element)
        bounds = tuple(itertools.accumulate([0, *sizes]))
        if root in self.classes.runs or any(_merged(e) or self.classes.block(e) != 1 for e in members):
            raise BlockConflict("a split of units that move in runs or blocks")
        producer = next((self.producers.pop(e) for e in members if e in self.producers), None)
        pieces = []
        for start, stop in itertools.pairwise(bounds):
            parts = [(part_name(param, start, stop), axis) for param, axis in members]
            pieces.append(self.classes.union(*parts))
            if producer is not None:
                self.producers.setdefault(parts[0], part_name(producer, start, stop))
        for param, axis in members:
            if base_name(param) in self.sections:  # a part of a tensor cut already: cut along two axes
                raise BlockConflict(f"{base_name(param)} would be cut along two axes")
            self.sections[param] = (axis, bounds)
            for other in [e for e in self.classes.parent if e[0] == param and e[1] != axis]:  # read before the cut
                self.classes.union(other, *self.elements(param, other[1]))
        self.segments[element] = list(zip(pieces, sizes, strict=True))
        self.dissolved.add(root)
        return pieces

    def matrix_product(self, node: fx.Node) -> list[Element]:
        """``a @ b`` of ``(..., n, k)`` by ``(..., k, m)``: ``a``'s last axis and ``b``'s second last hold the same
        units (they are summed over); the leading axes broadcast."""
        a, b = (self.axes[n] for n in node.args[:2])
        if len(a) < 2 or len(b) < 2:
            raise self.refusal(node, "a product with a vector")
        self.join(a[-1], b[-2])
        return [*self.broadcast(node, [n for n in node.args[:2]], 2), a[-2], b[-1]]

    def window_attention(self, node: fx.Node) -> list[Element]:
        """torchvision's ``shifted_window_attention(x, qkv_weight, proj_weight, bias, ...)`` (Swin): one node for a
        whole attention. Its heads carry a relative-position bias each, so they stay in place, and so do the
        query, key and value dimensions; the input's channels are the packed projection's inputs, the output's
        the projection's units."""
        x, qkv, proj = (self.axes[node.args[i]] for i in range(3))
        self.join(x[-1], qkv[1])
        self.join(FIXED, qkv[0], proj[1])
        for name in ("qkv_bias", "logit_scale"):
            if isinstance(given := node.kwargs.get(name), fx.Node):
                self.join(FIXED, *self.axes[given])
        bias = node.kwargs.get("proj_bias")
        out = self.classes.union(proj[0], *(self.axes[bias] if isinstance(bias, fx.Node) else []))
        self.producers.setdefault(out, _holder(node.args[2].target))
        return [*x[:-1], out]

    def position_bias(self, node: fx.Node) -> list[Element]:
        """torchvision's ``_get_relative_position_bias(table, index, window)``: a bias per head and pair of
        positions, gathered from the table; heads and positions stay in place."""
        self.join(FIXED, *self.axes[node.args[0]])
        return [FIXED] * len(self.shapes[node])

    def patch_merging(self, node: fx.Node) -> list[Element]:
        """torchvision's ``_patch_merging_pad(x)``: ``(..., H, W, C) -> (..., H/2, W/2, 4 C)``, the channels of
        four neighbouring positions side by side (a concatenation of four copies of the channels' units)."""
        x = self.axes[node.args[0]]
        self.require_fixed(node, x, range(len(x) - 3, len(x) - 1), "patch merging mixes positions")
        out = [*x[:-1], FIXED]
        if self.permuted(x[-1]):
            out[-1] = (f"<{node.name}>", len(x) - 1)
            self.segments[out[-1]] = self.pieces(x[-1], self.shapes[node.args[0]][-1]) * 4
        return out

    def einsum(self, node: fx.Node) -> list[Element]:
        """``torch.einsum(equation, *operands)``: the axes of one index letter hold the same units (summed over or
        kept); a letter of the result carries them."""
        # torch.einsum hands torch.fx its operands one by one, even when given as a list
        equation, operands = node.args[0].replace(" ", ""), node.args[1:]
        if "..." in equation or "->" not in equation:
            raise self.refusal(node, f"an einsum {node.args[0]!r} without an explicit result or with '...'")
        inputs, result = equation.split("->")
        letters: dict[str, Element] = {}
        for spec, operand in zip(inputs.split(","), operands, strict=True):
            for letter, size, element in zip(spec, self.shapes[operand], self.axes[operand], strict=True):
                if size > 1:
                    letters[letter] = self.join(letters[letter], element) if letter in letters else element
        return [letters.get(letter, FIXED) for letter in result]

    def attention(self, node: fx.Node) -> list[Element]:
        """``F.scaled_dot_product_attention(q, k, v)``: queries and keys are compared dimension by dimension (their
        last axes hold the same units), keys and values share the tokens, the leading axes (batch, heads)
        broadcast; the output holds the values' units."""
        q, k, v = (self.axes[_argument(node, i, n, None)] for i, n in enumerate(("query", "key", "value")))
        mask = _argument(node, 3, "attn_mask", None)
        if isinstance(mask, fx.Node) and any(self.permuted(e) for e in self.axes[mask]):
            raise self.refusal(node, "its attention mask varies along a permuted axis")
        self.join(q[-1], k[-1])
        self.join(k[-2], v[-2])
        operands = [_argument(node, i, n, None) for i, n in enumerate(("query", "key", "value"))]
        return [*self.broadcast(node, operands, 2), q[-2], v[-1]]

    def broadcast(self, node: fx.Node, operands: list[fx.Node], trailing: int) -> list[Element]:
        """The leading axes of the result (all but the last ``trailing``), each operand's axis of size > 1 joined
        into the one it broadcasts to."""
        out: list[Element | None] = [None] * (len(self.shapes[node]) - trailing)
        for operand in operands:
            shape, axes = self.shapes[operand][:-trailing], self.axes[operand][:-trailing]
            for axis, (size, element) in enumerate(zip(shape, axes, strict=True)):
                k = axis + len(out) - len(shape)
                if size > 1:
                    out[k] = element if out[k] is None else self.join(out[k], element)
        return [FIXED if e is None else e for e in out]

    def multihead_attention(self, node: fx.Node, module: nn.MultiheadAttention) -> list:
        """``nn.MultiheadAttention(query, key, value)`` -> ``(output, weights)``. Its heads move as blocks; within a
        head the query and key dimensions move jointly (their dot products stay), and the value dimensions with
        the output projection's inputs. The packed ``in_proj_weight`` (rows: query, key, value) is read in three
        sections; the output projection's units are the output's last axis."""
        if module.bias_k is not None:
            raise BlockConflict("add_bias_kv appends learnt key and value rows, which are not implemented")
        e, heads_count = module.embed_dim, module.num_heads
        query, key, value = (self.axes[_argument(node, i, n, None)] for i, n in enumerate(("query", "key", "value")))
        if module._qkv_same_embed_dim:
            weights = [part_name(f"{node.target}.in_proj_weight", i * e, (i + 1) * e) for i in range(3)]
            self.sections[f"{node.target}.in_proj_weight"] = (0, (0, e, 2 * e, 3 * e))
        else:
            weights = [f"{node.target}.{n}_proj_weight" for n in ("q", "k", "v")]
        biases = []
        if module.in_proj_bias is not None:
            biases = [part_name(f"{node.target}.in_proj_bias", i * e, (i + 1) * e) for i in range(3)]
            self.sections[f"{node.target}.in_proj_bias"] = (0, (0, e, 2 * e, 3 * e))
        for inputs, weight in zip((query, key, value), weights, strict=True):
            self.classes.union(inputs[-1], (weight, 1))
        qk = self.classes.union((weights[0], 0), (weights[1], 0), *[(b, 0) for b in biases[:2]])
        vo = self.classes.union((weights[2], 0), *[(b, 0) for b in biases[2:]], (f"{node.target}.out_proj.weight", 1))
        heads = (f"<{node.target} heads>", 0)
        for element, name in ((qk, "qk"), (vo, "vo")):
            self.producers.setdefault(element, f"{node.target}.{name}")
            self.classes.set_runs(element, heads, e // heads_count, whole=False)
        out = (f"{node.target}.out_proj.weight", 0)
        self.producers.setdefault(out, f"{node.target}.out_proj")
        if module.out_proj.bias is not None:
            self.classes.union(out, (f"{node.target}.out_proj.bias", 0))
        return [[*query[:-1], out], None]  # the attention weights carry no unit: read like a constant

    # --- helpers -------------------------------------------------------------------------------------------

    def param(self, node: fx.Node, attribute: str) -> str:
        name = f"{node.target}.{attribute}"
        if name not in self.state:
            raise self.refusal(node, f"its {attribute} is not in the state dict (a parametrised module?)")
        return name

    def read(self, element: Element, param: str, axis: int) -> None:
        """``param``'s ``axis`` holds ``element``'s units; where ``element`` is a concatenation, each segment's
        units are a section of the axis (:attr:`~lmcot.permutation.PermutationSpec.sections`)."""
        if element in self.within:
            raise BlockConflict(f"{param} reads one head's dimensions, which the heads' permutations reorder")
        if element not in self.segments:
            self.classes.union(element, *self.elements(param, axis))
            return
        pieces = self.segments[element]
        bounds = tuple(itertools.accumulate([0, *[n for _, n in pieces]]))
        if self.sections.setdefault(param, (axis, bounds)) != (axis, bounds):
            raise BlockConflict(f"it reads {param} in sections {bounds} along axis {axis}, and elsewhere otherwise")
        for (piece, _), start, stop in zip(pieces, bounds, bounds[1:], strict=False):
            self.classes.union(piece, (part_name(param, start, stop), axis))

    def elements(self, param: str, axis: int) -> list[Element]:
        """``param``'s ``axis`` as elements: one, or one per part where another axis of ``param`` is sectioned."""
        if param in self.sections and self.sections[param][0] != axis:
            bounds = self.sections[param][1]
            return [(part_name(param, a, b), axis) for a, b in itertools.pairwise(bounds)]
        if param in self.sections:
            raise BlockConflict(f"it uses {param}'s sectioned axis {axis} whole")
        return [(param, axis)]

    def pieces(self, element: Element, entries: int) -> list[tuple[Element, int]]:
        """The segments ``(element, entries)`` of an axis: its concatenated parts, or itself."""
        return self.segments.get(element, [(element, entries)])

    def join(self, *elements: Element) -> Element:
        """:meth:`UnionFind.union`, concatenated axes segment by segment (of the same sizes); returns the first."""
        within = [e for e in elements if e in self.within]
        if within:  # one head's dimensions: those of every operand are the same units (queries and keys)
            if any(e not in self.within and e != FIXED for e in elements):
                raise BlockConflict("it joins one head's dimensions with an axis of other units")
            self.classes.union(*[self.within.get(e, FIXED) for e in elements])
            return elements[0]
        concatenated = [e for e in elements if e in self.segments]
        if not concatenated:
            return self.classes.union(*elements)
        sizes = [n for _, n in self.segments[concatenated[0]]]
        for e in elements:
            if e == FIXED:
                for piece, _ in self.segments[concatenated[0]]:
                    self.classes.union(FIXED, piece)
            elif e not in self.segments or [n for _, n in self.segments[e]] != sizes:
                raise BlockConflict("it joins a concatenated axis with an axis not concatenated the same way")
            else:
                for (a, _), (b, _) in zip(self.segments[concatenated[0]], self.segments[e], strict=True):
                    self.classes.union(a, b)
        return elements[0]

    def permuted(self, element: Element) -> bool:
        """Whether some permutation may still act on ``element`` (on some segment of a concatenation)."""
        element = self.within.get(element, element)
        return any(self.classes.permuted(e) for e, _ in self.segments.get(element, [(element, 0)]))

    def require_fixed(self, node: fx.Node, x: list[Element], axes, why: str) -> None:
        for a in axes:
            if self.permuted(x[a]):
                raise self.refusal(node, f"{why}, and axis {a} is permuted")

    def refusal(self, node: fx.Node, reason: str) -> SpecInferenceError:
        return SpecInferenceError(
            f"cannot infer the permutation spec at {_describe(node, self.module)}: {reason}. "
            "Write the model's permutation_spec() by hand."
        )


def _merged(element: Element) -> bool:
    """Whether ``element`` is a merged axis of an intermediate tensor (no parameter's)."""
    return element[0].startswith("<")


def _argument(node: fx.Node, index: int, name: str, default):
    """Argument ``index`` of a call (counting the tensor a method is called on), or keyword ``name``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _holder(param: str) -> str:
    """The qualified name of the module that holds parameter ``param``; ``param`` itself where the model does."""
    return param.rpartition(".")[0] or param


def _describe(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"node {node.name!r} (module {node.target!r}, {type(root.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"node {node.name!r} (method .{node.target}())"
    if node.op == "call_function":
        return f"node {node.name!r} (function {getattr(node.target, '__name__', repr(node.target))})"
    return f"node {node.name!r} ({node.op} {node.target!r})"


def _states_symmetry(module: nn.Module) -> bool:
    """Whether ``module`` states its own permutation symmetry (a ``symmetry(prefix)`` method): a leaf of the trace."""
    return callable(getattr(module, "symmetry", None))


class _Tracer(fx.Tracer):
    """A tracer that remembers the last node it recorded, to say where tracing stopped, and does not enter a module
    that states its own symmetry."""

    last: fx.Node | None = None

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return _states_symmetry(module) or super().is_leaf_module(module, qualified_name)

    def create_node(self, *args, **kwargs) -> fx.Node:
        self.last = super().create_node(*args, **kwargs)
        return self.last


def _trace(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """The model's graph: traced symbolically, or, where its Python code branches on shapes, dtypes or optional
    arguments (Hugging Face's models), traced on ``example_input`` (:class:`_ConcreteTracer`): a graph of the
    branches the example takes."""
    tracer = _Tracer()
    try:
        return fx.GraphModule(model, tracer.trace(model))
    except Exception as error:  # any tracing failure: try again with the example's shapes known
        where = f"past {_describe(tracer.last, model)}" if tracer.last is not None else "at its start"
        symbolic = f"torch.fx cannot trace the model {where}: {error}"
    concrete = _ConcreteTracer(example_input)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            graph = concrete.trace(model)
    except Exception as error:  # neither: the analysis has no graph to read
        raise SpecInferenceError(
            f"{symbolic}; traced on the example input, it fails too ({type(error).__name__}: {error}). Write the "
            "model's permutation_spec() by hand."
        ) from error
    finally:
        for m, training in modes.items():
            m.training = training
    if concrete.data_dependent:
        raise SpecInferenceError(
            f"{symbolic}; traced on the example input, its control flow depends on tensor values "
            f"({concrete.data_dependent[0]}), so the graph would hold for this input only. Write the model's "
            "permutation_spec() by hand."
        )
    return fx.GraphModule(model, graph)


class _ConcreteProxy(fx.Proxy):
    """A proxy that carries its value on the example input: what is not a tensor (a shape, a dtype, a device, a
    flag) is that plain value, so Python code that branches on it takes the example's branch."""

    def __init__(self, node: fx.Node, tracer: _ConcreteTracer, value):
        super().__init__(node, tracer)
        self.value = value

    def __getattr__(self, name):
        if name in ("value", "node", "tracer"):
            raise AttributeError(name)
        attribute = getattr(self.value, name)
        if not isinstance(attribute, torch.Tensor) and not callable(attribute):  # .shape, .dtype, .ndim, ...
            return attribute
        return super().__getattr__(name)

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        return iter([self[i] for i in range(len(self.value))])

    def __bool__(self):
        return self.tracer.concrete(self, bool)

    def __int__(self):
        return self.tracer.concrete(self, int)

    def __index__(self):
        return self.tracer.concrete(self, int)


class _ConcreteTracer(_Tracer):
    """torch.fx tracing with the example input running alongside (:class:`_ConcreteProxy`); results that hold no
    tensor are folded into the graph as constants, and a branch on a tensor's value is recorded."""

    def __init__(self, example_input: torch.Tensor):
        super().__init__()
        self.example, self.data_dependent = example_input, []

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        """One placeholder, the input: ``forward``'s other arguments (masks, flags, ``**kwargs``) keep defaults.
        ``root_fn`` is a module's unbound ``forward`` (:func:`_trace` traces modules only): its first argument is
        the module itself."""
        x = self.create_proxy("placeholder", list(inspect.signature(root_fn).parameters)[1], (), {})
        return root_fn, [self.root, x]

    def concrete(self, proxy: _ConcreteProxy, kind):
        self.data_dependent.append(f"{kind.__name__}() of {_describe(proxy.node, self.root)}")
        return kind(proxy.value)

    def keys(self, obj):
        return obj.value.keys()

    def create_proxy(self, kind, target, args, kwargs, *rest, **options):
        value = self.run(kind, target, args, kwargs)  # the input, a parameter or a buffer: a tensor
        if not any(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(value)):
            return value  # a size, a shape, a flag: a constant of the graph
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **options)
        return _ConcreteProxy(proxy.node, self, value)

    def run(self, kind, target, args, kwargs):
        """The value of one call on the example, with torch.fx's patches of torch functions off."""
        plain = pytree.tree_map(lambda a: a.value if isinstance(a, _ConcreteProxy) else a, (args, kwargs))
        with _maybe_revert_all_patches():
            if kind == "placeholder":
                return self.example
            if kind == "get_attr":
                return functools.reduce(getattr, target.split("."), self.root)
            if kind == "call_function":
                return target(*plain[0], **plain[1])
            if kind == "call_method":
                return getattr(plain[0][0], target)(*plain[0][1:], **plain[1])
            if kind == "call_module":
                return self.root.get_submodule(target)(*plain[0], **plain[1])
        return None


def _shapes(graph_module: fx.GraphModule, example_input: torch.Tensor) -> tuple[dict, dict]:
    """Each node's tensor shape on ``example_input`` (None if it is not a tensor), and the shapes of the tensors
    of each node that returns a tuple of them."""
    shapes, items = {}, {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            try:
                result = super().run_node(node)
            except Exception as error:
                raise SpecInferenceError(
                    f"the model fails on the example input at {_describe(node, graph_module)}: {error}"
                ) from error
            shapes[node] = tuple(result.shape) if isinstance(result, torch.Tensor) else None
            if isinstance(result, tuple | list) and result and all(isinstance(r, torch.Tensor) for r in result):
                items[node] = [tuple(r.shape) for r in result]  # a split's pieces
            return result

    modes = {m: m.training for m in graph_module.modules()}
    try:
        graph_module.eval()
        with torch.no_grad():
            Recorder(graph_module).run(example_input)
    finally:
        for m, training in modes.items():
            m.training = training
    return shapes, items
