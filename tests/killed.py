"""The tests' stand-in for a killed run (tests/test_faults.py sends real SIGKILLs): train.py's GRPO stage
stopped after n real steps, the update of step n + 1 raising before it starts (its rollout is lost, as a
killed run's would be)."""
import pytest


class Killed(Exception):
    """Raised in place of the update that a kill would have interrupted."""


def main_killed_after(train, argv, n):
    """train.main(argv), stopped after n real GRPO steps (pytest.raises(Killed) around it)."""
    real, calls = train.grpo_update, []

    def update(*a, **k):
        if len(calls) == n:
            raise Killed
        calls.append(1)
        return real(*a, **k)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(train, "grpo_update", update)
        train.main(argv)
