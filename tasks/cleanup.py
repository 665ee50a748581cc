"""``--overwrite``: remove what earlier runs committed under an output, so nothing is orphaned.

Only what Restora wrote goes: every manifest under ``manifests/``, the outputs its rows name
(images under ``images/``, or the shard files under ``data/`` for the one-file formats) and their
side files under inputs/, masks/ and uncertainty/, and the ``plan/`` and ``preview/`` folders,
``summary.json``, ``preview.png``, ``most_uncertain.png`` and ``images/metadata.parquet``.
Other files under the output prefix stay, and so does ``damaged/``: a manifest that cannot be
read is moved there (the files it named are unknown) rather than deleted. Each manifest (the commit marker) is deleted before
the files it names, so an interrupted clean-up never leaves a manifest pointing at missing
images.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa

from .damaged import move_aside
from .manifest import manifest_dir, read_manifest
from .storage import full_uri, is_object_store, join, list_files, open_fs
from .writers import DATA_DIR, IMAGES_DIR, SIDE_TREES, side_relpath, split_output_uri
from .writers.images import METADATA_NAME

_RUN_FOLDERS = ("plan", "preview")
_RUN_FILES = ("summary.json", "preview.png", "most_uncertain.png", f"{IMAGES_DIR}/{METADATA_NAME}")


def _remove(fs: Any, paths: list[str]) -> None:
    """Delete files, ignoring those already gone."""
    if not paths:
        return
    if is_object_store(fs):
        fs.rm(paths)  # one bulk request per 1000 keys; missing keys are not an error on S3
        return
    for path in paths:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _prune_empty_folders(fs: Any, root: str) -> None:
    """Remove empty folders left under ``root`` (only file systems have folders)."""
    if is_object_store(fs) or not fs.exists(root):
        return
    folders = {p.rstrip("/") for p in fs.find(root, withdirs=True) if fs.isdir(p)}
    folders.add(root.rstrip("/"))
    for folder in sorted(folders, key=lambda p: p.count("/"), reverse=True):  # deepest first
        if not fs.ls(folder):
            fs.rmdir(folder)


def remove_previous_outputs(output_uri: str, storage_options: dict[str, Any] | None = None
                            ) -> dict[str, int]:
    """Delete every committed output of earlier runs under ``output_uri``; return counts."""
    fs, root = open_fs(output_uri, storage_options)
    if not fs.exists(root):
        return {"manifests": 0, "files": 0}
    images_prefix = join(output_uri, IMAGES_DIR) + "/"
    data_prefix = join(output_uri, DATA_DIR) + "/"
    mfs, mroot = open_fs(manifest_dir(output_uri), storage_options)
    manifests = [posixpath.join(mroot, rel) for rel in list_files(mfs, mroot, (".parquet",))]
    removed_files = 0
    damaged = 0
    for path in manifests:
        uri = full_uri(mfs, path)
        try:
            outputs = read_manifest(uri, storage_options, columns=["output_uri"])["output_uri"]
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            # Unreadable: the files it named are unknown; keep it, out of manifests/, for a person.
            move_aside(uri, output_uri, posixpath.basename(path).removesuffix(".parquet"),
                       f"{type(exc).__name__}: {exc}", storage_options)
            damaged += 1
            continue
        outputs = [u for u in outputs.to_pylist() if u]
        images = [u[len(images_prefix):] for u in outputs if u.startswith(images_prefix)]
        shard_files = sorted({split_output_uri(u)[0][len(data_prefix):] for u in outputs
                              if u.startswith(data_prefix) and split_output_uri(u)[1]})
        sides = [rel for rel in (side_relpath(u, output_uri) for u in outputs) if rel]
        mfs.rm_file(path)
        _remove(fs, [posixpath.join(root, IMAGES_DIR, rel) for rel in images]
                + [posixpath.join(root, DATA_DIR, rel) for rel in shard_files]
                + [posixpath.join(root, tree, rel) for rel in sides for tree in SIDE_TREES])
        removed_files += len(images) + len(shard_files)
    for folder in _RUN_FOLDERS:
        if fs.exists(posixpath.join(root, folder)):
            fs.rm(posixpath.join(root, folder), recursive=True)
    _remove(fs, [posixpath.join(root, name) for name in _RUN_FILES])
    for tree in (IMAGES_DIR, DATA_DIR, *SIDE_TREES, "manifests"):
        _prune_empty_folders(fs, posixpath.join(root, tree))
    return {"manifests": len(manifests) - damaged, "files": removed_files, "damaged": damaged}
