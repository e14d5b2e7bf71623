"""What a failing command shows: a user error is one line and exit code 2; anything else is a
bug, shown as one: exit code 1, a line pointing at the log, the traceback in the log only."""

import pytest
import typer

from features.errors import UserInputError
from pipelines import cli


def failing_app(error: Exception) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)

    @app.command()
    def run() -> None:
        raise error

    return app


def run_main(monkeypatch, tmp_path, error: Exception) -> int:
    monkeypatch.setenv("OMNISHELF_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "app", failing_app(error))
    monkeypatch.setattr("sys.argv", ["omnishelf"])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    return ended.value.code


@pytest.mark.parametrize(
    "error",
    [
        UserInputError("stock.csv: missing column 'on_hand'"),
        LookupError("no 'champion' version of model 'omnishelf-recommender'"),
        FileNotFoundError("mapping.toml"),
    ],
)
def test_a_user_error_is_one_line_and_exit_code_2(monkeypatch, tmp_path, capsys, error):
    assert run_main(monkeypatch, tmp_path, error) == 2
    shown = capsys.readouterr().out
    assert shown.startswith("error: ") and str(error) in shown
    assert "Traceback" not in shown
    assert not (tmp_path / "data" / cli.ERROR_LOG).exists()


@pytest.mark.parametrize("error", [ValueError("cannot reshape array"), KeyError("store_id")])
def test_any_other_error_is_a_bug_with_its_traceback_in_the_log(
    monkeypatch, tmp_path, capsys, error
):
    assert run_main(monkeypatch, tmp_path, error) == 1
    shown = " ".join(capsys.readouterr().out.split())
    log = tmp_path / "data" / cli.ERROR_LOG
    assert shown == (
        f"internal error ({type(error).__name__}): a bug in omnishelf, not in your input; the "
        f"traceback is in {log}"
    )
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "raise error" in logged


def test_the_log_never_carries_a_password(monkeypatch, tmp_path, capsys):
    error = RuntimeError("connection to postgresql://app:s3cret@db:5432/mlflow refused")
    assert run_main(monkeypatch, tmp_path, error) == 1
    logged = (tmp_path / "data" / cli.ERROR_LOG).read_text()
    assert "s3cret" not in logged and "postgresql://app:***@db:5432/mlflow" in logged


def test_a_bad_setting_is_a_user_error_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("OMNISHELF_HOST", "localhost")
    with pytest.raises(UserInputError, match="OMNISHELF_HOST: value is not a valid IPv4 or IPv6"):
        cli._settings(tracked=False)
