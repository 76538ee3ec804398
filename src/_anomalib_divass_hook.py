"""Make ``anomalib --model DivideAssemble`` work, at no cost to other Python programs.

anomalib's command line resolves ``--model`` short names among the model classes already
imported, and has no plugin mechanism. The ``anomalib_divass_autoload.pth`` file installed
with the package imports this small module at interpreter start; it only adds a finder to
``sys.meta_path`` (no anomalib, no torch). When, and only when, ``anomalib.cli.cli`` is
imported, the finder imports ``anomalib_divass`` (which registers ``DivideAssemble`` and the
``MVTec`` data alias), lets anomalib's module load, and then prepares the command line with
``anomalib_divass.cli.prepare_anomalib_cli`` (the workarounds of ``anomalib_divass.compat``),
before the arguments are parsed.

The plugin is imported *before* anomalib's CLI module, as ``anomalib-divass`` imports it, so that
both commands parse alike: Python caches ``typing.Union`` objects by equality, so whichever of
Lightning's ``Union[float, int]`` and ``Union[int, float]`` is built first is the one every later
spelling gets, and jsonargparse tries the members in that order. anomalib's CLI module, imported
first, builds the float-first one: ``--trainer.limit_train_batches 1`` then means every batch (1.0),
not one batch as Lightning documents and as ``anomalib-divass`` (Lightning imported first) reads it.
"""

from __future__ import annotations

import sys

_TARGET = "anomalib.cli.cli"
_MARKER = "_anomalib_divass_cli_watcher"


class _CLIWatcher:
    """Meta path finder that imports the plugin right after ``anomalib.cli.cli`` loads."""

    _anomalib_divass_cli_watcher = True

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != _TARGET:
            return None
        from importlib.machinery import PathFinder  # noqa: PLC0415  (only when anomalib's CLI loads)

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module: object) -> None:
            try:  # the plugin first, as `anomalib-divass` imports it (see the module's docstring)
                from anomalib_divass.cli import prepare_anomalib_cli  # noqa: PLC0415
            except Exception as error:
                print(f"anomalib-divass: plugin not loaded ({error!r}).", file=sys.stderr)
                load(module)
                return
            load(module)
            prepare_anomalib_cli(sys.argv)  # as `anomalib-divass` does; may exit (bad --ckpt_path)

        spec.loader.exec_module = exec_module
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached."""


def install() -> None:
    """Add the watcher once (``.pth`` lines may run more than once per start)."""
    if not any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CLIWatcher())


install()
