"""Credentials never reach a reader: URIs lose their password, text around them is kept."""

import pytest

from features.redaction import redact_uri, scrub

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            f"postgresql+psycopg://omnishelf:{PASSWORD}@db.internal:5432/mlflow",
            "postgresql+psycopg://omnishelf:***@db.internal:5432/mlflow",
        ),
        (f"redis://:{PASSWORD}@cache:6379/0", "redis://:***@cache:6379/0"),
        ("sqlite:////srv/omnishelf/mlruns/mlflow.db", "sqlite:////srv/omnishelf/mlruns/mlflow.db"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    ],
)
def test_a_uri_keeps_everything_but_its_password(uri, shown):
    assert redact_uri(uri) == shown


def test_text_keeps_its_words_and_loses_every_password():
    text = (
        f"no 'champion' version in the registry at postgresql://u:{PASSWORD}@h:5432/db: run "
        f"train; feature store (registry 'mysql://root:{PASSWORD}@h/reg', redis "
        f"cache:6379,password={PASSWORD},ssl=true) unusable."
    )
    scrubbed = scrub(text)
    assert PASSWORD not in scrubbed
    assert scrubbed == (
        "no 'champion' version in the registry at postgresql://u:***@h:5432/db: run "
        "train; feature store (registry 'mysql://root:***@h/reg', redis "
        "cache:6379,password=***,ssl=true) unusable."
    )
