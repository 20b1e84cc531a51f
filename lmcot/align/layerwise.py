"""Layer by layer, from the input to the output (Ferbach et al. 2024): each layer's units are matched on
their incoming weights once the inputs they read are aligned; recurrent layers by a fixed-point iteration."""

from __future__ import annotations

import logging

import torch

from lmcot.align.assignment import assign, lap
from lmcot.permutation import Permutations, identity_permutations, incoming_matrices, incoming_weights

log = logging.getLogger(__name__)


def layerwise(model_a, model_b, unit_scores, solve=None, recurrent_iterations: int = 20) -> Permutations:
    """Solve the permutations one at a time in the spec's order (input to output).

    ``unit_scores(name, w_a, w_b)`` returns the ``(n, n)`` score to maximise between A's and B's units of
    permutation ``name``, from their incoming weights ``(n, fan_in)`` (B's already aligned at its inputs;
    see :func:`incoming_weights`); ``solve(name, score)`` turns it into a permutation (default
    :func:`lmcot.align.assignment.lap`).

    A recurrent layer's units also feed themselves (``weight_hh``: both axes are ``name``), so aligning B's
    recurrent columns needs the permutation being solved: the exact problem is a quadratic assignment
    problem. It is approximated by a fixed-point (alternating) iteration: solve on the input-to-hidden
    columns alone (the layer-by-layer answer without the recurrent term), then rebuild B's rows with its
    recurrent columns permuted by the current estimate ``p`` and re-solve, until ``p`` does not change, at
    most ``recurrent_iterations`` times (0: input-only). The result then solves the LAP built with its own
    recurrent rows. If the iteration cycles or does not settle, it returns, with a logged note, the iterate
    of best self-consistent objective ``sum_i S_p[i, p(i)]`` (``S_p``: the score built with ``p``'s own
    rows) among all iterates, the input-only one included. Layers without recurrent weights are solved
    once, as before. A head group (attention) is solved at its first permutation, every member on the
    inputs solved before it, by :func:`lmcot.align.assignment.assign`.
    """
    with torch.no_grad():
        solve = solve or lap
        spec = model_a.permutation_spec()
        state_a = spec.split({k: v.detach().float() for k, v in model_a.state_dict().items()})
        state_b = spec.split({k: v.detach().float() for k, v in model_b.state_dict().items()})
        identity_perms = identity_permutations(spec, state_a)
        perms = dict(identity_perms)
        for done, name in enumerate(spec.names):
            solved = spec.names[:done]
            if name in spec.groups:  # a head group is solved at its first permutation, all its members at once
                members = spec.head_groups()[spec.groups[name][0]]
                if name == members[0]:
                    solved = [n for n in solved if n not in members]
                    scores = {
                        m: unit_scores(
                            m,
                            incoming_weights(spec, m, state_a, identity_perms, solved),
                            incoming_weights(spec, m, state_b, perms, solved),
                        )
                        for m in members
                    }
                    perms.update(assign(spec, scores, solve))
                continue
            w_a = incoming_weights(spec, name, state_a, identity_perms, solved)
            w_b = incoming_weights(spec, name, state_b, perms, solved)
            perms[name] = solve(name, unit_scores(name, w_a, w_b))
            with_own = incoming_matrices(spec, name, state_a, solved, recurrent=True)
            if recurrent_iterations <= 0 or len(with_own) == len(incoming_matrices(spec, name, state_a, solved)):
                continue  # no recurrent weights: solved once
            w_a = incoming_weights(spec, name, state_a, identity_perms, solved, recurrent=True)

            def score_of(perm, name=name, solved=solved, w_a=w_a):
                rows_b = incoming_weights(spec, name, state_b, {**perms, name: perm}, solved, recurrent=True)
                return unit_scores(name, w_a, rows_b)

            perms[name] = _fixed_point(name, perms[name], score_of, solve, recurrent_iterations)
        return perms


def _fixed_point(name: str, perm: torch.Tensor, score_of, solve, max_iterations: int) -> torch.Tensor:
    """Iterate ``perm <- solve(name, score_of(perm))`` from ``perm`` until it stays put (see :func:`layerwise`)."""
    visited = {}  # permutation as a tuple -> (its self-consistent objective, the permutation)
    for _ in range(max_iterations):
        score = score_of(perm)
        visited[tuple(perm.tolist())] = (score.double()[torch.arange(len(perm)), perm].sum().item(), perm)
        new = solve(name, score)
        if torch.equal(new, perm):
            return perm
        if tuple(new.tolist()) in visited:
            log.info("recurrent fixed point at %s cycles; keeping the iterate of best objective", name)
            break
        perm = new
    else:
        score = score_of(perm)
        visited[tuple(perm.tolist())] = (score.double()[torch.arange(len(perm)), perm].sum().item(), perm)
        log.info("recurrent fixed point at %s unsettled after %d iterations; keeping the best", name, max_iterations)
    return max(visited.values(), key=lambda v: v[0])[1]


def naive_weight_matching(model_a, model_b, inputs=None, recurrent_iterations: int = 20) -> Permutations:
    """Layer by layer, LAP on the inner products of incoming weight vectors, ``W_A W_B^T`` (a recurrent
    layer's rows include its hidden-to-hidden weights; see :func:`layerwise`)."""
    return layerwise(model_a, model_b, lambda name, w_a, w_b: w_a @ w_b.T, recurrent_iterations=recurrent_iterations)
