"""The daemon without the `sim` extra: aiohttp and pyjwt made unimportable in a child interpreter.

`run`/`token`/`check-config` import and work without them; `demo`/`simulate` exit 78 with one line
naming the install command. (A real `pip install .` into a fresh venv is the same check end to end;
this one runs offline in the suite.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consumer.sim import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]

BLOCK = textwrap.dedent(
    """
    import sys
    for name in ("aiohttp", "jwt"):
        sys.modules[name] = None  # import raises ImportError, find_spec returns None
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_simulator_commands_exit_78_with_the_install_command(command: str) -> None:
    proc = run_blocked(f"from consumer.cli import main; sys.exit(main([{command!r}]))")
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL_HINT in lines[0] and command in lines[0]


def test_daemon_commands_import_and_run_without_aiohttp_or_pyjwt(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[hub]\nurl = "https://hub.example.com/event-status"\n'
        '[auth]\ntoken_url = "https://idp.example.com/token"\nclient_id = "svc"\nclient_secret = "s3cret"\n'
        '[[sinks]]\ntype = "stdout"\n'
    )
    config.chmod(0o600)
    proc = run_blocked(
        f"""
        import consumer.daemon, consumer.commands.run, consumer.commands.token, consumer.commands.check_config
        from consumer.auth.jwtinfo import decode_unverified
        assert decode_unverified("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.") == {{"sub": "x"}}
        from consumer.cli import main
        code = main(["check-config", "--config", {str(config)!r}])
        assert "aiohttp" not in sys.modules or sys.modules["aiohttp"] is None
        assert "jwt" not in sys.modules or sys.modules["jwt"] is None
        sys.exit(code)
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
