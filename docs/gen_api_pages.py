"""Build step (mkdocs-gen-files): one API reference page per module of `equitrain_jax`.

The package is read as source by griffe, never imported, so the docs build needs neither torch nor
JAX, and a renamed or added module needs no edit here. A module's page renders its own public
objects from their docstrings (mkdocstrings); a package's page also lists the names it re-exports
(`from equitrain_jax.phonons import ...`), each linked to where it is defined and documented.
`reference/SUMMARY.md` is the navigation that mkdocs-literate-nav reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import griffe
import mkdocs_gen_files

PACKAGE = "equitrain_jax"
ROOT = Path(__file__).resolve().parent.parent


def summary_line(obj: griffe.Object) -> str:
    """The first sentence of an object's docstring, on one line (empty without a docstring)."""
    if obj.docstring is None:
        return ""
    paragraph = " ".join(obj.docstring.value.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0].replace("|", "\\|")


def reexports(package: griffe.Module) -> list[tuple[str, griffe.Object]]:
    """The public names a package imports from its submodules, with the objects they stand for."""
    names = []
    for name, member in package.members.items():
        if member.is_alias and member.is_public:
            try:
                names.append((name, member.final_target))
            except griffe.AliasResolutionError:
                continue  # a name from outside the package
    return names


def page_text(module: griffe.Module) -> str:
    """The Markdown of a module's reference page, titled with the module's dotted path."""
    text = f"---\ntitle: {module.path}\n---\n\n::: {module.path}\n"
    if not module.is_init_module:
        return text
    own = [name for name, member in module.members.items()
           if member.is_public and not member.is_alias and not member.is_module]
    members = "\n".join(f"        - {name}" for name in own) if own else "false"
    text += f"    options:\n      members:{' ' if not own else chr(10)}{members}\n"
    names = reexports(module)
    if names:
        text += f"\n## Names exported by `{module.path}`\n\n| name | summary (each name links to where it is defined) |\n|---|---|\n"
        for name, target in names:
            text += f"| [`{name}`][{target.path}] | {summary_line(target)} |\n"
    return text


def walk(module: griffe.Module):
    """The module and every public submodule below it, depth first, in name order."""
    yield module
    for name in sorted(module.modules):
        submodule = module.modules[name]
        if not name.startswith("_") and not submodule.is_alias:
            yield from walk(submodule)


package = griffe.load(PACKAGE, search_paths=[ROOT], allow_inspection=False, resolve_aliases=True,
                      resolve_external=False)
navigation = mkdocs_gen_files.Nav()
for module in walk(package):
    parts = tuple(module.path.split("."))
    page = Path(*parts, "index.md") if module.is_init_module else Path(*parts).with_suffix(".md")
    navigation[parts] = page.as_posix()
    with mkdocs_gen_files.open(Path("reference", page), "w") as stream:
        stream.write(page_text(module))
    mkdocs_gen_files.set_edit_path(Path("reference", page), Path(module.filepath).relative_to(ROOT))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as stream:
    stream.writelines(navigation.build_literate_nav())
