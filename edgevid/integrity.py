"""`edgevid verify`: the whole integrity check of an artifact or a golden pack, and its signature."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EdgevidError


def verify_folder(path: Path, key: Path | None) -> tuple[str, str]:
    """``(kind, what was checked)``; raises a one-line ``EdgevidError`` on the first problem."""
    from .signing import REQUIRE_ENV, load_public_key, verify_signature

    path = Path(path)
    public = load_public_key(key) if key else None
    saved = os.environ.pop(REQUIRE_ENV, None)  # the explicit --key is the check here
    try:
        if (path / "manifest.json").is_file():
            from .artifact import Artifact

            artifact = Artifact(path)
            artifact.verify()
            kind, signed, detail = "artifact", artifact.manifest.seal or "", f"{len(artifact.manifest.files)} files and the manifest seal match"
        elif (path / "pack.json").is_file():
            from .harness.golden import load_pack

            pack = load_pack(path)
            for index in range(len(pack.chunks)):
                pack.load_chunk(index)
            kind, signed = "pack", pack.info["digest"]
            detail = f"{len(pack.chunks)} chunks" + (", gates.yaml" if pack.info.get("gates") else "") + " and the digest match"
        else:
            raise EdgevidError(f"{path} is neither an edgevid artifact (manifest.json) nor a golden pack (pack.json)")
    finally:
        if saved is not None:
            os.environ[REQUIRE_ENV] = saved
    if public is not None:
        key_id = verify_signature(path, public, kind, signed)
        detail += f"; signed by key {key_id}"
    elif (path / "signature.json").is_file():
        detail += "; signed (pass --key PUB to check the signature)"
    else:
        detail += "; not signed"
    return kind, detail
