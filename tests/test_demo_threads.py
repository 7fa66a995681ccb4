"""The demo runs one job at a time, so it uses every usable core (the presets hold one thread)."""

import pytest
import torch


@pytest.mark.parametrize("threads, expected", [(0, None), (3, 3)])
def test_demo_sets_its_threads_before_rendering(monkeypatch, tmp_path, threads, expected):
    import facefactors.cli.demo as D
    import facefactors.experiments.ufe as X

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(D, "usable_cores", lambda: 5)

    def render(*args, **kwargs):
        calls.append(("render",))
        raise KeyboardInterrupt  # stop here: only the order and the count matter

    monkeypatch.setattr(X, "world_a_sets", render)
    with pytest.raises(KeyboardInterrupt):
        D.demo(str(tmp_path / "demo"), preset="tiny", threads=threads)
    assert calls[:2] == [("threads", expected or 5), ("render",)]


def test_usable_cores_is_positive_and_at_most_the_machine():
    import os

    from facefactors.utils.device import usable_cores

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_demo_refuses_a_negative_thread_count_before_any_work(tmp_path):
    from facefactors.cli.demo import demo
    from facefactors.utils.errors import UserError

    with pytest.raises(UserError, match="--threads -1"):
        demo(str(tmp_path / "demo"), preset="tiny", threads=-1)
    assert not (tmp_path / "demo").exists()
