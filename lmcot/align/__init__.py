"""Alignment: one permutation per hidden layer that maps model B onto model A.

Every method shares one signature, ``method(model_a, model_b, inputs, **options) -> Permutations``, and
works on any architecture through its :class:`~lmcot.permutation.PermutationSpec`; apply the result with
:func:`~lmcot.permutation.apply_permutations` to B's state dict. :mod:`lmcot.align.methods` is the registry
(name -> function, options, whether it needs data) and runs them; one module per family of methods:

- :mod:`~lmcot.align.weight_matching`: Git Re-Basin weight matching, all layers at once;
- :mod:`~lmcot.align.activations`: matching by activations on data;
- :mod:`~lmcot.align.layerwise`: the input-to-output walk, and naive weight matching on it;
- :mod:`~lmcot.align.covariance`: covariance-aware weight matching (Ferbach et al. 2024);
- :mod:`~lmcot.align.transport`: optimal transport plans and the barycentre's couplings.

This file imports nothing, so that importing one family does not load the others.
"""
