"""MkDocs hooks: recorded results from the repository in the site, and docstring shape notation.

Pages link to figures and raw results where they lie in the repository, relative to the page
(`../benchmarks/results/phonon_finetune/bands_Si.png` from `docs/experiment.md`), so the same link
works on a forge's Markdown view and in the site. `on_files` registers each such file under that
path and copies it into the built site under `results/`, so no binary is duplicated in git.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

RESULTS = "benchmarks/results"
RESULT_SUFFIXES = {".png", ".json", ".txt"}
RESULT_DEPTH = 3  # results/<file>, results/<experiment>/<file> and one variant folder below; run folders stay out


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the recorded results under `benchmarks/results/` as site files `results/...`."""
    root = Path(config.config_file_path).resolve().parent
    folder = root / RESULTS
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and path.suffix in RESULT_SUFFIXES and len(relative.parts) <= RESULT_DEPTH:
            file = File.generated(config, f"../{RESULTS}/{relative.as_posix()}", abs_src_path=str(path),
                                  inclusion=InclusionLevel.INCLUDED)  # else excluded as a dot path
            file.dest_uri = f"results/{relative.as_posix()}"
            files.append(file)
    return files


class ShapeNotation(logging.Filter):
    """Docstrings write array shapes as `[n_heads][n_elements]`, which Markdown reads as a reference
    link. An undotted target is such a shape, never a Python object, and renders as written; say
    so at INFO rather than fail the strict build. Unresolved dotted targets stay warnings."""

    UNRESOLVED = re.compile(r"from \S+\.py:\d+: .*Could not find cross-reference target '([^'.]+)'$")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and self.UNRESOLVED.search(record.getMessage()):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = f"shape notation in a docstring, left as text: {record.getMessage()}", ()
        return True


def on_startup(command: str, dirty: bool) -> None:
    logging.getLogger("mkdocs.plugins.mkdocs_autorefs._internal.plugin").addFilter(ShapeNotation())
