"""Locating data files inside installed packages, without importing the packages.

Importing a package can be slow (aeon pulls in numba), and the loaders only need
a file that ships inside it, so they ask `importlib.util.find_spec` where the
package lives. A missing package raises `ImportError` naming the pip extra.
"""

import importlib.util
import pathlib

EXTRA_HINT = "pip install 'jaxseq[data]'"


def _missing(module: str, distribution: str, what: str) -> ImportError:
    return ImportError(
        f"{what} needs the {distribution!r} package (import name {module!r}): {EXTRA_HINT}"
    )


def require(module: str, *, distribution: str, what: str) -> None:
    """Raises `ImportError` naming the extra unless `module` can be imported.

    Args:
      module: the import name (`sklearn`).
      distribution: the name pip installs (`scikit-learn`).
      what: the loader that needs it, for the message.
    """
    if importlib.util.find_spec(module) is None:
        raise _missing(module, distribution, what)


def package_file(module: str, *parts: str, distribution: str, what: str) -> pathlib.Path:
    """Returns the path of a data file shipped inside the package `module`.

    Args:
      module: the import name of a top-level package (`aeon`, `statsmodels`, `bible`).
      *parts: the path of the file inside the package.
      distribution: the name pip installs, for the message.
      what: the loader that needs it, for the message.

    Returns:
      The path, which exists.

    Raises:
      ImportError: the package is not installed.
      FileNotFoundError: the package is installed but lacks the file.
    """
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise _missing(module, distribution, what)
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(pathlib.Path(spec.origin).parent)]
    for root in roots:
        path = pathlib.Path(root, *parts)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{what}: the installed {distribution!r} package has no file {'/'.join(parts)} "
        f"(looked in {roots}); reinstall it: {EXTRA_HINT}"
    )
