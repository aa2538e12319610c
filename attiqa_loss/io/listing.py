"""Image discovery: :func:`scan_images` expands files and folders into image files (by
:data:`IMAGE_EXTENSIONS`) and lists, in an :class:`ImageListing`, every entry it left out
with the reason; :func:`list_images` is the same without that list. The one lister of
every command and dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .atomic import _TEMP, PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")


@dataclass
class ImageListing:
    """What :func:`scan_images` found: the image files, and every other entry it met with
    the reason it was left out.

    Attributes:
        files: image files, sorted per argument as before, de-duplicated.
        skipped: ``(path, reason)`` for each entry that is not listed: a file whose name
            has no image extension, a dangling symlink, a symlink loop, a second path to a
            file already listed, a folder that cannot be read, ...
    """

    files: List[Path] = field(default_factory=list)
    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        """One line: how many entries were skipped, by reason ("" if none). Reasons that
        point at a problem (a dangling symlink, an unreadable folder, a bad image) name a
        few of the files; files that are simply not images are only counted, by extension."""
        if not self.skipped:
            return ""
        by_reason: Dict[str, List[Path]] = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason, []).append(path)
        parts = []
        for reason, paths in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if reason.startswith(_QUIET_REASONS):
                parts.append(f"{len(paths)} {reason}")
            else:
                shown = ", ".join(str(q) for q in paths[:limit]) + (", ..." if len(paths) > limit else "")
                parts.append(f"{len(paths)} {reason}: {shown}")
        return f"{len(self.skipped)} file(s) skipped: " + "; ".join(parts)


    def lines(self, indent: str = "  ") -> List[str]:
        """``"<indent><path>: <reason>"`` for every skipped entry whose reason points at a
        problem (files that are simply not images are left out)."""
        return [f"{indent}{path}: {reason}" for path, reason in self.skipped if not reason.startswith(_QUIET_REASONS)]


#: Skip reasons that are counted but whose files are not named in a summary.
_QUIET_REASONS = ("not an image file name", "temporary file of an interrupted write", "sub-folder (not searched)")


def _skip_reason_for_name(path: Path) -> Optional[str]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return None
    if suffix == ".tmp" and _TEMP.match(path.name):
        return "temporary file of an interrupted write"
    return f"not an image file name ({suffix or 'no extension'})"


def scan_images(paths: Iterable[PathLike], *, recursive: bool = True, follow_symlinks: bool = True) -> ImageListing:
    """Expand files and folders into image files, and say what was left out and why.

    Folders are searched (recursively unless ``recursive=False``) for
    :data:`IMAGE_EXTENSIONS` (case-insensitive); files named explicitly are kept whatever
    their extension. With ``follow_symlinks`` (the default) a symlink to a file or a
    folder counts as that file or folder, everywhere; without it every symlink met inside
    a folder is skipped. A folder reached twice through symlinks (a loop) is searched
    once; a file reached under a second path is listed once, under the first. Dangling
    symlinks, unreadable folders and other non-image entries are listed in
    :attr:`ImageListing.skipped` with the reason. Each argument's files are sorted by path
    (the order :func:`list_images` always had). A path that does not exist raises
    ``FileNotFoundError`` naming it.
    """
    listing = ImageListing()
    seen_files: Dict[Tuple[int, int], Path] = {}
    seen_paths: Set[Path] = set()

    def add(q: Path) -> None:
        if q in seen_paths:
            return
        try:
            st = q.stat()
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = None
        if key is not None and key in seen_files:
            listing.skipped.append((q, f"same file as {seen_files[key]}"))
            return
        if key is not None:
            seen_files[key] = q
        seen_paths.add(q)
        listing.files.append(q)

    for p in paths:
        p = Path(p)
        if p.is_dir():
            found: List[Path] = []
            visited: Set[Tuple[int, int]] = set()

            def walk(folder: Path, depth: int) -> None:
                try:
                    st = folder.stat()
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError as exc:
                    listing.skipped.append((folder, f"folder that cannot be read ({type(exc).__name__})"))
                    return
                if (st.st_dev, st.st_ino) in visited:
                    listing.skipped.append((folder, "folder already searched (reached again through a symlink)"))
                    return
                visited.add((st.st_dev, st.st_ino))
                for entry in entries:
                    q = folder / entry.name
                    try:
                        link = entry.is_symlink()
                        if link and not follow_symlinks:
                            listing.skipped.append((q, "symlink (not followed)"))
                            continue
                        if link and not os.path.exists(q):
                            listing.skipped.append((q, "dangling symlink"))
                            continue
                        is_dir, is_file = entry.is_dir(), entry.is_file()
                    except OSError as exc:
                        listing.skipped.append((q, f"entry that cannot be read ({type(exc).__name__})"))
                        continue
                    if is_dir:
                        if recursive:
                            walk(q, depth + 1)
                        else:
                            listing.skipped.append((q, "sub-folder (not searched)"))
                    elif not is_file:
                        listing.skipped.append((q, "not a regular file"))
                    else:
                        reason = _skip_reason_for_name(q)
                        if reason is None:
                            found.append(q)
                        else:
                            listing.skipped.append((q, reason))

            walk(p, 0)
            for q in sorted(found):
                add(q)
        elif p.is_file():
            add(p)
        elif p.is_symlink():
            raise FileNotFoundError(f"no such file or folder: {p} (a symlink to {os.readlink(p)}, which does not exist)")
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return listing


def list_images(paths: Iterable[PathLike], *, recursive: bool = True, follow_symlinks: bool = True) -> List[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files
    (:func:`scan_images` without the list of what was skipped).

    Folders are searched recursively for :data:`IMAGE_EXTENSIONS` (case-insensitive);
    files named explicitly are kept whatever their extension. A path that does not exist
    raises ``FileNotFoundError`` naming it.
    """
    return scan_images(paths, recursive=recursive, follow_symlinks=follow_symlinks).files
