"""What ``citadel lab up`` does with a lab already recorded under its name."""

import pytest

from deploy.lab.lifecycle import existing_lab_verdict


@pytest.mark.parametrize(
    ("same_shape", "dead", "recorded", "verdict"),
    [
        (True, 0, 2, "reuse"),  # all of it runs: hand it back
        (True, 1, 2, "rebuild"),  # part of it is down: a lab with a dead host is no use
        (True, 2, 2, "rebuild"),
        (False, 0, 2, "refuse"),  # another shape that runs: somebody may be using it
        (False, 1, 2, "refuse"),
        # Another shape and nothing runs: a record left by a killed run or a copied machine
        # (CI once inherited one and failed every VM test on it).
        (False, 2, 2, "rebuild"),
        (False, 1, 1, "rebuild"),
    ],
)
def test_existing_lab_verdict(same_shape, dead, recorded, verdict):
    assert existing_lab_verdict(same_shape=same_shape, dead=dead, recorded=recorded) == verdict
