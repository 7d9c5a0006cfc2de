import json

import pytest

from fpsattention import FPSSchedule, Phase


def test_phase_boundaries_follow_alpha() -> None:
    schedule = FPSSchedule(alpha1=0.25, alpha2=0.75)
    names = [schedule.phase_index(step, 8) for step in range(8)]
    assert names == [0, 0, 1, 1, 1, 1, 2, 2]
    assert schedule.phase_at(0, 8) is schedule.early
    assert schedule.phase_at(7, 8) is schedule.late


def test_fixed_schedule_runs_one_phase() -> None:
    phase = Phase(fp8=True, quant_group=32, window=(1, 2, 3))
    schedule = FPSSchedule.fixed(phase)
    assert {schedule.phase_at(s, 10) for s in range(10)} == {phase}


def test_density_and_average() -> None:
    grid = (4, 4, 4)
    assert Phase(window=None).density(grid) == 1.0
    assert Phase(window=(2, 2, 4)).density(grid) == 0.25
    assert Phase(window=(9, 9, 9)).density(grid) == 1.0  # clamped to the grid
    schedule = FPSSchedule(
        alpha1=0.5, alpha2=0.5, early=Phase(window=(2, 2, 4)), middle=Phase(), late=Phase(window=None)
    )
    assert schedule.average_density(grid, 4) == pytest.approx((0.25 * 2 + 1.0 * 2) / 4)


def test_json_round_trip(tmp_path) -> None:
    schedule = FPSSchedule(alpha1=0.1, early=Phase(fp8=False, quant_group=8, window=(1, 1, 1)))
    path = schedule.save(tmp_path / "s.json")
    assert FPSSchedule.load(path) == schedule
    assert json.loads(path.read_text())["tile"] == [4, 8, 8]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha1": 0.8, "alpha2": 0.2}, "alpha1 <= alpha2"),
        ({"alpha1": -0.1}, "alpha1 must be a number in"),
        ({"tile": (0, 4, 4)}, "tile must be three positive ints"),
        ({"tile": (1, 4, 4), "middle": Phase(quant_group=3)}, "must divide the tile"),
    ],
)
def test_bad_schedule(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        FPSSchedule(**kwargs)


def test_bad_phase_and_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="quant_group"):
        Phase(quant_group=0)
    with pytest.raises(ValueError, match="window"):
        Phase(window=(1, 2))
    (tmp_path / "bad.json").write_text('{"tiles": [1, 2, 3]}')
    with pytest.raises(ValueError, match="unknown fields"):
        FPSSchedule.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        FPSSchedule.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="step must be in"):
        FPSSchedule().phase_index(8, 8)
