"""Opening the Optuna storage retries what a race between workers causes, and nothing else.
The race (two workers creating PostgreSQL types at once) cannot be caused on demand, so the
storage class is replaced by one that fails as the loser of that race does."""

import pytest
import sqlalchemy.exc

from pipelines import sweeps


class Race:
    """Refuses `failures` times as PostgreSQL refuses a duplicate CREATE TYPE, then opens."""

    def __init__(self, failures: int, error=None):
        self.failures, self.opened = failures, []
        self.error = error or sqlalchemy.exc.ProgrammingError(
            "CREATE TYPE trialstate", {}, Exception("duplicate key value")
        )

    def __call__(self, url):
        self.opened.append(url)
        if len(self.opened) <= self.failures:
            raise self.error
        return f"storage at {url}"


@pytest.mark.parametrize(("failures", "attempts"), [(0, 1), (1, 2), (2, 3)])
def test_the_loser_of_the_race_tries_again(monkeypatch, failures, attempts):
    race = Race(failures)
    monkeypatch.setattr(sweeps.optuna.storages, "RDBStorage", race)
    assert sweeps.open_storage("postgresql://db") == "storage at postgresql://db"
    assert len(race.opened) == attempts


def test_after_three_attempts_the_last_error_itself_is_raised(monkeypatch):
    race = Race(3)
    monkeypatch.setattr(sweeps.optuna.storages, "RDBStorage", race)
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="CREATE TYPE"):
        sweeps.open_storage("postgresql://db")
    assert len(race.opened) == 3


def test_other_errors_are_not_retried(monkeypatch):
    race = Race(1, error=KeyError("bug"))
    monkeypatch.setattr(sweeps.optuna.storages, "RDBStorage", race)
    with pytest.raises(KeyError):
        sweeps.open_storage("postgresql://db")
    assert len(race.opened) == 1
