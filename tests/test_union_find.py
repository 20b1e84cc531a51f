"""The weighted union-find under spec inference, by hand: block sizes multiply along a path and survive its
compression, joins keep one block size per class or say why not, a fixed class fixes the heads its runs move with,
and runs of two joined classes merge (same size, heads joined, whole if either is)."""

import pytest

from lmcot.spec_inference import FIXED, BlockConflict, UnionFind

A, B, C, D, H, K = (("a", 0), ("b", 0), ("c", 0), ("d", 0), ("<heads>", 0), ("<other heads>", 0))


def test_block_sizes_multiply_along_a_path_and_survive_its_compression():
    classes = UnionFind()
    classes.attach(C, B, 2)  # c: 2 entries per unit of b
    classes.attach(D, A, 3)  # d: 3 entries per unit of a
    assert classes.union(D, B) == D  # b joins d's class: 3 entries per unit of a, like d
    assert classes.parent[B] == A and classes.factor[B] == 3
    assert classes.parent[C] == B  # c still points at b: a path of two steps
    assert (classes.find(C), classes.block(C)) == (A, 6)
    assert classes.parent[C] == A and classes.factor[C] == 6  # compressed, its block kept
    assert [classes.block(e) for e in (A, B, C, D)] == [1, 3, 6, 3]
    assert classes.members(C) == [B, C, A, D]  # in the order first seen, FIXED left out
    assert classes.find(("new", 1)) == ("new", 1) and classes.block(("new", 1)) == 1


def test_the_coarser_class_becomes_the_child():
    classes = UnionFind()
    classes.attach(B, A, 4)
    classes.attach(D, C, 2)
    classes.union(D, B)  # d: 2 per unit of c, b: 4 per unit of a; so c's units are 2 entries of a's
    assert classes.find(C) == A and [classes.block(e) for e in (A, B, C, D)] == [1, 4, 2, 4]
    classes = UnionFind()
    classes.attach(B, A, 4)
    classes.attach(D, C, 2)
    classes.union(B, D)  # the same the other way round
    assert classes.find(C) == A and [classes.block(e) for e in (A, B, C, D)] == [1, 4, 2, 4]


def test_joins_of_different_block_sizes_say_which_elements():
    classes = UnionFind()
    classes.attach(B, A, 2)
    with pytest.raises(BlockConflict) as error:
        classes.union(A, B)
    assert str(error.value) == "it joins ('a', 0) and ('b', 0), blocks of 1 and 2 entries of the same units"
    classes.attach(D, C, 3)
    with pytest.raises(BlockConflict) as error:
        classes.union(B, D)
    assert str(error.value) == "it joins ('b', 0) and ('d', 0), blocks of 2 and 3 entries of units"
    classes.union(B, FIXED)  # a fixed class: block sizes no longer matter
    classes.union(A, B, FIXED)
    assert not classes.permuted(A) and not classes.permuted(B) and classes.permuted(C)


def test_a_fixed_class_fixes_the_heads_its_runs_move_with():
    classes = UnionFind()
    classes.set_runs(A, H, 4, whole=False)
    assert classes.runs == {A: (H, 4, False)} and classes.permuted(H)
    classes.union(B, A)  # b's class joins: the runs move to the root
    assert classes.runs == {B: (H, 4, False)}
    classes.union(FIXED, A)
    assert classes.runs == {} and not classes.permuted(H)
    classes.set_runs(C, K, 2, whole=True)
    classes.union(C, FIXED)
    assert not classes.permuted(K)
    classes.set_runs(A, ("<late heads>", 0), 2, whole=False)  # a class already fixed fixes new heads at once
    assert not classes.permuted(("<late heads>", 0)) and classes.runs == {}


def test_runs_of_joined_classes_merge_or_conflict():
    classes = UnionFind()
    classes.set_runs(A, H, 3, whole=False)
    classes.set_runs(B, K, 3, whole=True)
    classes.union(A, B)
    assert classes.runs == {A: (H, 3, True)} and classes.find(K) == classes.find(H)
    classes.set_runs(C, ("<third>", 0), 2, whole=False)
    with pytest.raises(BlockConflict) as error:
        classes.union(A, C)
    assert str(error.value) == "it joins units moved in runs of 3 and of 2"


def test_runs_must_hold_whole_blocks():
    classes = UnionFind()
    classes.attach(B, A, 2)
    classes.set_runs(B, H, 4, whole=False)  # runs of 4 entries of b: 2 units of a
    assert classes.runs == {A: (H, 2, False)}
    with pytest.raises(BlockConflict) as error:
        classes.set_runs(B, K, 3, whole=False)
    assert str(error.value) == "runs of 3 entries split the blocks of 2 entries of ('b', 0)"
    classes = UnionFind()
    classes.set_runs(C, H, 2, whole=False)
    classes.attach(D, A, 2)
    with pytest.raises(BlockConflict) as error:  # c's class would hang under a's in blocks of 2
        classes.union(D, C)
    assert str(error.value) == "it joins runs of ('c', 0) to ('a', 0) in blocks of 2"


def test_a_class_joined_from_its_finer_side_hangs_under_the_coarser_in_whole_blocks():
    classes = UnionFind()
    classes.attach(D, A, 2)  # d: blocks of 2 entries of a's units
    classes.union(C, D)  # c's single entries join d's blocks: c's class hangs under a's
    assert classes.find(C) == A
    assert classes.block(C) == 2
    assert type(classes.block(C)) is int  # block sizes reach torch's view() as they are
    classes = UnionFind()
    classes.set_runs(C, H, 2, whole=False)
    classes.attach(D, A, 2)
    with pytest.raises(BlockConflict) as error:  # the same join, c's class moving runs: they would split blocks
        classes.union(C, D)
    assert str(error.value) == "it joins runs of ('c', 0) to ('a', 0) in blocks of 2"
