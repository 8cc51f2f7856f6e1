import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_dlbio.tta import averaged  # noqa: E402


@pytest.mark.parametrize("mode", ["none", "flips", "dihedral"])
def test_equivariant_function_is_unchanged(mode):
    # A pointwise function commutes with every flip/rotation, so averaging must give it back exactly.
    x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 6, 10), np.float32))
    out = averaged(lambda t: 2 * t + 1, x, mode)
    assert out.shape == x.shape
    torch.testing.assert_close(out, 2 * x + 1)


def test_inverse_transforms_undo_position_dependent_outputs():
    # fn marks the top-left pixel after each transform; the inverses must bring every mark home,
    # so the average spreads over the corners that the transforms map (0,0) to.
    x = torch.zeros(1, 1, 4, 4)

    def mark(t):
        out = torch.zeros_like(t)
        out[..., 0, 0] = 1
        return out

    flips = averaged(mark, x, "flips")
    assert flips[0, 0, 0, 0] == pytest.approx(1 / 3) and flips[0, 0, -1, 0] == pytest.approx(1 / 3)
    dih = averaged(mark, x, "dihedral")
    assert float(dih.sum()) == pytest.approx(1.0)
    assert {float(dih[0, 0, i, j]) for i in (0, -1) for j in (0, -1)} == {0.25}


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown test-time"):
        averaged(lambda t: t, torch.zeros(1, 1, 2, 2), "mirror")
