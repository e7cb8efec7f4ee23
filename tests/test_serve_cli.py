"""`fedpatch serve` refuses a bad start with a clear message before it opens a port."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedpatch_app.cli import main
from fedpatch_app.errors import ConfigError
from fedpatch_app.inspection.serve import read_token


def test_a_missing_model_stops_the_command(tmp_path: Path, capsys) -> None:
    code = main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"])
    assert code == 2
    assert "not a fedpatch model folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,words",
    [
        (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--token-file", "missing-token"], "cannot read it"),
        (["--scoring-slots", "0"], "--scoring-slots must be a whole number > 0"),
        (["--queue", "-1"], "--queue must be a whole number > 0"),
        (["--upload-timeout", "0"], "--upload-timeout must be a number > 0"),
        (["--trusted-key", "missing-token"], "--trusted-key"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, capsys, args: list[str], words: str) -> None:
    args = [str(tmp_path / a) if a == "missing-token" else a for a in args]
    assert main(["serve", "--model", str(tmp_path), *args]) == 2
    assert words in capsys.readouterr().err


def test_the_token_file(tmp_path: Path, caplog) -> None:
    path = tmp_path / "token"
    path.write_text("\n  \n")
    with pytest.raises(ConfigError, match="the file is empty"):
        read_token(path)
    path.write_text("two words\n")
    with pytest.raises(ConfigError, match="one word"):
        read_token(path)
    path.write_text("short\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_token(path) == "short"
    assert "only 5 characters" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    path.write_text("a-long-enough-random-token-0123456789\nignored second line\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert read_token(path) == "a-long-enough-random-token-0123456789"
    assert not caplog.text


class _Failing:
    """A predictor that fails the way a bug would."""

    def score(self, category, paths):
        raise RuntimeError("out of memory, say")


@pytest.mark.service
def test_a_failure_while_scoring_is_a_500_and_the_service_goes_on(
    pipe_clip_run: Path, tiny_root: Path
) -> None:
    import asyncio

    import httpx

    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.inspection.scorer import Scorer
    from fedpatch_app.inspection.service import create_app

    scorer = Scorer(load_model(pipe_clip_run / "model"), _Failing())
    scorer.warm_up()  # fails the same way: /readyz says so
    image = next((tiny_root / "pipe_clip" / "test" / "good").glob("*.png")).read_bytes()

    async def talk() -> None:
        transport = httpx.ASGITransport(app=create_app(scorer))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            for _ in range(2):
                answer = await client.post(
                    "/v1/predict/pipe_clip", content=image, headers={"Content-Type": "image/png"}
                )
                assert answer.status_code == 500
                assert answer.json()["error"] == (
                    "scoring failed (RuntimeError), logged by the service"
                )
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "warm-up failed" in ready.json()["error"]

    asyncio.run(talk())
    scorer.close()
