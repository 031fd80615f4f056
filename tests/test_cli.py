from typer.testing import CliRunner

import dcrl
from dcrl.cli import app


def test_version_command_prints_package_version():
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0, result.output
    assert f"dcrl {dcrl.__version__}" in result.output
