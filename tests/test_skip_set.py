import pytest

from swift_vllm.skip_set import SkipSet, default_skip_set, num_skippable


def test_vector_round_trip():
    skip = SkipSet(attention=(3, 1), mlp=(28,))
    vector = skip.to_vector(30)
    assert len(vector) == num_skippable(30) == 56
    assert sum(vector) == 3
    assert SkipSet.from_vector(vector, 30) == SkipSet(attention=(1, 3), mlp=(28,))


def test_from_vector_rejects_wrong_length():
    with pytest.raises(ValueError, match="expected 56"):
        SkipSet.from_vector([0] * 10, 30)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.2, 0.45, 0.9])
def test_default_set_size_and_range(ratio):
    skip = default_skip_set(30, ratio)
    assert skip.size == round(ratio * 56)
    assert all(1 <= i <= 28 for i in skip.attention + skip.mlp)
    assert skip.ratio(30) == pytest.approx(skip.size / 56)


def test_cache_shape():
    assert SkipSet((2,), (5, 4)).to_dict() == {"attention": [2], "mlp": [4, 5]}
