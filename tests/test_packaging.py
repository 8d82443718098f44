"""``pip install billing-gateway`` without extras: a working Gateway, none of the services'
dependencies, and commands that name the extra they need (issue 8). Builds the wheel in
a clean virtualenv, so it takes a minute or two."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

CHECK = textwrap.dedent(
    """
    import importlib.util, sys
    from billing_gateway import Gateway, InvalidEvent, events, to_micros
    from billing_gateway.follower import StreamFollower
    gw = Gateway(unknown_tenant="allow")
    assert gw.try_spend("cus_1", to_micros("0.25"))
    assert events.decode_event(open(sys.argv[1], "rb").read()).event_type == "subscription.created"
    for heavy in ("aiohttp", "litestar", "sqlalchemy", "psycopg", "uvicorn", "prometheus_client"):
        assert importlib.util.find_spec(heavy) is None, heavy
    print("ok")
    """
)


@pytest.mark.timeout(900)
def test_the_sdk_installs_and_works_without_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    seed = ROOT / "examples" / "events" / "01_subscription_created.json"
    done = subprocess.run([str(python), "-c", CHECK, str(seed)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
    cli = subprocess.run(
        [str(venv / "bin" / "billing-gateway"), "consume"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 2 and "[daemon] extra" in cli.stderr and "Traceback" not in cli.stderr
