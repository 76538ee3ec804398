"""What ``pip install`` delivers: the wheel's files, and the shipped config found outside the repository.

The wheel is built as ``pip install`` builds it (hatchling, from ``pyproject.toml``); it must carry the
config (``anomalib-divass config`` prints it, the leaderboard reads it), the ``.pth`` hook and its module
(``anomalib --model DivideAssemble``), and the model README.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from cli_helpers import BIN, environment, run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src"
CONFIG = "anomalib_divass/configs/divide_assemble.yaml"
SHIPPED = {
    CONFIG: SOURCE / CONFIG,
    "anomalib_divass_autoload.pth": SOURCE / "anomalib_divass_autoload.pth",
    "_anomalib_divass_hook.py": SOURCE / "_anomalib_divass_hook.py",
    "anomalib_divass/models/divide_assemble/README.md": SOURCE / "anomalib_divass/models/divide_assemble/README.md",
    "anomalib_divass/configs/__init__.py": SOURCE / "anomalib_divass/configs/__init__.py",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built by pip with the project's build backend."""
    out = tmp_path_factory.mktemp("wheel")
    # With hatchling in the environment build in it; otherwise pip brings it, as for `pip install -e .`.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation, "-w", str(out), str(REPO)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    (path,) = out.glob("anomalib_divass-*.whl")
    return path


def test_wheel_carries_the_config_the_hook_and_the_model_readme(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member, source in SHIPPED.items():
            assert member in names, f"{member} is not in {wheel.name}"
            assert archive.read(member) == source.read_bytes(), member
        assert archive.read("anomalib_divass_autoload.pth").decode().strip() == "import _anomalib_divass_hook"
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        assert "anomalib-divass = anomalib_divass.cli:main" in archive.read(entry_points).decode()
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "docs/", "configs/"))]


def test_config_is_found_from_the_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    """Without installing: the wheel's files first on the path, run from a folder outside the repository."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**environment(), "PYTHONPATH": str(unpacked)}
    command = [sys.executable, "-m", "anomalib_divass.cli", "config", "--path"]
    process = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    path = Path(process.stdout.strip())
    assert path == unpacked / CONFIG
    assert path.read_bytes() == (SOURCE / CONFIG).read_bytes()


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What ``anomalib-divass config`` and ``anomalib-divass config --path`` print, run outside the repository."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    outputs = {}
    for name, arguments in {"config": [], "path": ["--path"]}.items():
        process = run([str(BIN / "anomalib-divass"), "config", *arguments], cwd=elsewhere)
        assert process.returncode == 0, process.stderr[-2000:]
        outputs[name] = process.stdout
    return outputs


def test_config_command_prints_the_shipped_config_and_its_path(
    printed: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from anomalib_divass.cli import _print_config

    path = Path(printed["path"].strip())
    assert path.is_file()
    assert path.name == "divide_assemble.yaml"
    assert printed["config"] == path.read_text(encoding="utf-8")
    assert _print_config(["--pth"]) == 2
    assert "unrecognized arguments: --pth" in capsys.readouterr().err


def test_shipped_config_trains_as_written(printed: dict[str, str], tmp_path: Path) -> None:
    """The config parses with the model's arguments, as the README's command gives it to anomalib."""
    from anomalib_divass.models.divide_assemble.lightning_model import DEFAULT_CHANNELS, DEFAULT_GRANULARITY

    copy = tmp_path / "divide_assemble.yaml"
    copy.write_text(printed["config"], encoding="utf-8")  # `anomalib-divass config > divide_assemble.yaml`
    process = run([str(BIN / "anomalib"), "train", "--config", str(copy), "--print_config"], cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    config = yaml.safe_load(process.stdout)
    model = config["model"]
    assert model["class_path"] == "anomalib_divass.DivideAssemble"
    assert model["init_args"]["granularity"] == list(DEFAULT_GRANULARITY)  # the model's default, written once
    assert model["init_args"]["channels"] == list(DEFAULT_CHANNELS)
    assert config["data"]["class_path"] == "anomalib_divass.MVTec"


def test_shipped_config_repeats_no_model_default() -> None:
    import inspect

    from anomalib_divass import DivideAssemble
    from anomalib_divass.configs import config_path
    from anomalib_divass.models.divide_assemble.variants import Variant

    text = config_path().read_text(encoding="utf-8")
    init_args = yaml.safe_load(text)["model"].get("init_args") or {}
    defaults = inspect.signature(DivideAssemble).parameters
    assert set(init_args) <= set(defaults)  # only arguments the model takes
    repeated = [name for name, value in init_args.items() if value == defaults[name].default]
    assert not repeated, f"the config repeats the model's defaults of {repeated}: leave them to the model"
    # Its comments name the model's variants and flags as they are (no number of the model's repeated).
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    variants = comments[comments.index("--model.variant") :]
    for variant in Variant:
        assert re.search(rf"[ ,]{re.escape(variant.value)}[ ,.]", variants), variant.value
    flags = set(re.findall(r"--model\.(\w+)", text))
    assert flags <= set(defaults), flags - set(defaults)
    assert not re.search(r"latent_weight \d", text)
