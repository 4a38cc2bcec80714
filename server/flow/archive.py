"""The model archive of export/import and store/restore: one zip file per (model version, party).

    manifest.json           {"format": "taskhub-fate-model", "format_version": 1, "model_id",
                             "model_version", "role", "party_id", "files": {path: sha256 hex},
                             "other_parts": [{"role", "party_id"}, ...]}
    model.json              the party's model record (job id, parent version, initiator, roles,
                            train DSL and conf, predict DSL)
    components/<name>.json  {"component", "module", "model", "meta"} for each component model

"other_parts" names the model's other parties: their parts are not in this archive (each is exported
by the server of its own party, and imported there). unpack() checks all of it before anything is stored: a corrupt, foreign or tampered archive is an
InvalidArgument naming what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import BinaryIO

from .. import errors
from .names import ROLES, check_model, check_name

FORMAT = "taskhub-fate-model"
FORMAT_VERSION = 1
MAX_ARCHIVE_BYTES = 256 << 20
RECORD_FIELDS = ("job_id", "parent_version", "initiator_role", "initiator_party", "roles_json", "train_dsl_json",
                 "train_conf_json", "inference_dsl_json", "create_time_ms")


def pack(row: dict, components: list[dict], other_parts: list[tuple[str, int]] = ()) -> bytes:
    files: dict[str, bytes] = {"model.json": json.dumps({k: row[k] for k in RECORD_FIELDS}, indent=1).encode()}
    for c in components:
        files[f"components/{c['component']}.json"] = json.dumps({
            "component": c["component"], "module": c["module"], "model": json.loads(c["model_json"]),
            "meta": json.loads(c["meta_json"] or "{}")}).encode()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_id": row["model_id"],
                "model_version": row["model_version"], "role": row["role"], "party_id": row["party_id"],
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                "other_parts": [{"role": r, "party_id": p} for r, p in other_parts]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _bad(why: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"not a taskhub model archive: {why}")


def unpack(data: bytes | BinaryIO) -> tuple[dict, list[dict]]:
    """(model row, component rows) from an archive (bytes, or a file at its start); InvalidArgument
    when anything does not check out."""
    if isinstance(data, (bytes, bytearray)):
        data = io.BytesIO(data)
    size = data.seek(0, io.SEEK_END)
    data.seek(0)
    if not size:
        raise _bad("the file is empty")
    if size > MAX_ARCHIVE_BYTES:
        raise _bad(f"larger than {MAX_ARCHIVE_BYTES} bytes")
    try:
        z = zipfile.ZipFile(data)
        if sum(i.file_size for i in z.infolist()) > MAX_ARCHIVE_BYTES:
            raise _bad(f"its files unpack to more than {MAX_ARCHIVE_BYTES} bytes")
        names = set(z.namelist())
        if "manifest.json" not in names:
            raise _bad("it has no manifest.json (export it with model/export)")
        manifest = json.loads(z.read("manifest.json"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _bad(f"its manifest is not of format {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise _bad(f"format_version {manifest.get('format_version')!r}; this server reads {FORMAT_VERSION}")
        listed = manifest.get("files")
        if not isinstance(listed, dict) or "model.json" not in listed:
            raise _bad("its manifest lists no model.json")
        extra = names - set(listed) - {"manifest.json"}
        if extra:
            raise _bad(f"files not in its manifest: {', '.join(sorted(extra))}")
        contents = {}
        for name, digest in listed.items():
            if name not in names:
                raise _bad(f"{name} is listed but missing")
            body = z.read(name)
            if hashlib.sha256(body).hexdigest() != digest:
                raise _bad(f"{name} does not match its sha256 in the manifest (corrupt or altered)")
            contents[name] = json.loads(body)
    except zipfile.BadZipFile as e:
        raise _bad(f"not a zip file ({e})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise _bad(f"unreadable content ({e})") from None
    record = contents["model.json"]
    try:
        row = {"model_id": str(manifest["model_id"]), "model_version": str(manifest["model_version"]),
               "role": str(manifest["role"]), "party_id": int(manifest["party_id"]),
               **{k: record[k] for k in RECORD_FIELDS}}
        comps = []
        for name, body in contents.items():
            if not name.startswith("components/"):
                continue
            comps.append({"model_id": row["model_id"], "model_version": row["model_version"], "role": row["role"],
                          "party_id": row["party_id"], "component": str(body["component"]),
                          "module": str(body["module"]), "model_json": json.dumps(body["model"]),
                          "meta_json": json.dumps(body.get("meta") or {})})
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(f"a field is missing or wrong ({e})") from None
    if not row["model_id"] or not row["model_version"] or row["role"] not in ROLES:
        raise _bad("model_id, model_version and role must be set")
    check_model(row["model_id"], row["model_version"])
    for c in comps:
        check_name(c["component"], "component name")
    row.update(loaded_times=0, service_ids_json="[]", imported=1, update_time_ms=row["create_time_ms"])
    return row, comps
