"""Optional Ed25519 signatures of artifacts and golden packs (``cryptography``).

A signature covers the artifact's manifest seal (which covers every file's sha256 and every
manifest field) or the pack's digest (which covers pack.json, every chunk and gates.yaml). It
lives in ``signature.json`` beside them::

    {"format": 1, "kind": "artifact", "algorithm": "ed25519", "key_id": "…", "signed": "<seal>",
     "signature": "<base64>"}

Runners refuse unsigned or wrongly signed artifacts and packs when ``EDGEVID_REQUIRE_SIGNATURE``
names a public key file (``edgevid --require-signature PUB …`` sets it for one command).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from .errors import EdgevidError

SIGNATURE = "signature.json"
REQUIRE_ENV = "EDGEVID_REQUIRE_SIGNATURE"
PASSPHRASE_ENV = "EDGEVID_KEY_PASSPHRASE"


class SignatureError(EdgevidError):
    """A missing, malformed or wrong signature, or a key that cannot be used."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a core dependency
        raise SignatureError("signing needs cryptography: pip install cryptography") from None
    return serialization, ed25519


def _message(kind: str, signed: str) -> bytes:
    return f"edgevid-{kind}-signature-v1\n{signed}".encode()


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_keypair(out: Path) -> tuple[Path, Path]:
    """Write ``OUT.key`` (private, PEM PKCS#8, mode 0600; encrypted when EDGEVID_KEY_PASSPHRASE is set)
    and ``OUT.pub`` (public, PEM); refuse to replace existing files."""
    serialization, ed25519 = _crypto()
    private_path, public_path = Path(f"{out}.key"), Path(f"{out}.pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise SignatureError(f"{path} already exists; edgevid will not replace a key: choose another --out")
    if not private_path.parent.is_dir():
        raise SignatureError(f"--out {out}: folder {private_path.parent} does not exist; create it first")
    key = ed25519.Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public)
    return private_path, public_path


def _read_key(path: Path, flag: str, what: str, suffix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{flag} {path}: cannot read {what} ({exc.strerror}); pass the {suffix} file from"
                             " `edgevid keygen`") from None


def load_private_key(path: str | Path):
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key(path, "--sign", "the key", ".key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        hint = f" (set {PASSPHRASE_ENV} for an encrypted key)" if "encrypted" in str(exc).lower() or "password" in str(exc).lower() else ""
        raise SignatureError(f"--sign {path}: not a PEM Ed25519 private key{hint}; make one with `edgevid keygen`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"--sign {path}: the key is not Ed25519; make one with `edgevid keygen`")
    return key


def load_public_key(path: str | Path, flag: str = "--key"):
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key(path, flag, "the public key", ".pub")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SignatureError(f"{flag} {path}: not a PEM public key; pass the .pub file from `edgevid keygen`") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{flag} {path}: the key is not Ed25519; pass the .pub file from `edgevid keygen`")
    return key


def _raw_public(public_key) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_record(private_key, kind: str, signed: str) -> dict:
    public_raw = _raw_public(private_key.public_key())
    return {"format": 1, "kind": kind, "algorithm": "ed25519", "key_id": key_id(public_raw), "signed": signed,
            "signature": base64.b64encode(private_key.sign(_message(kind, signed))).decode()}


def write_signature(folder: Path, private_key, kind: str, signed: str) -> None:
    from .outputs import write_atomic

    write_atomic(Path(folder) / SIGNATURE, json.dumps(signature_record(private_key, kind, signed), indent=2))


def verify_signature(folder: Path, public_key, kind: str, signed: str) -> str:
    """The key id when ``folder/signature.json`` is a valid signature of ``signed``, else ``SignatureError``."""
    from cryptography.exceptions import InvalidSignature

    path = Path(folder) / SIGNATURE
    if not path.is_file():
        raise SignatureError(f"{folder} is not signed (no {SIGNATURE}); sign it with --sign KEY when building it")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        signature = base64.b64decode(record["signature"], validate=True)
        claimed_kind, claimed = record["kind"], record["signed"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SignatureError(f"{path} is malformed; sign the {kind} again") from None
    if claimed_kind != kind:
        raise SignatureError(f"{path} signs a {claimed_kind}, not this {kind}")
    if claimed != signed:
        raise SignatureError(f"{path} was made for other contents (the {kind} changed after signing)")
    try:
        public_key.verify(signature, _message(kind, signed))
    except InvalidSignature:
        raise SignatureError(f"{path}: the signature is not valid for this key (signed by another key, or"
                             " tampered with)") from None
    return key_id(_raw_public(public_key))


def check_required_signature(folder: Path, signed: str, kind: str) -> None:
    """Verify the signature when ``EDGEVID_REQUIRE_SIGNATURE`` names a public key; else do nothing."""
    required = os.environ.get(REQUIRE_ENV)
    if not required:
        return
    verify_signature(folder, load_public_key(required, f"{REQUIRE_ENV}="), kind, signed)
