"""Chunks to live packet bodies: the one place that encodes what a subscriber is owed. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from livedata.core.frames import Chunk, FieldDef, Rows, data_body, frame_json


def select(keys: Iterable[str], fields: dict[str, FieldDef], wanted: tuple[str, ...] | None) -> list[str]:
    """The field keys a subscription asked for (by key or display name), in schema order."""
    if wanted is None:
        return list(keys)
    return [k for k in keys if k in wanted or fields[k].name in wanted]


def split_rows(chunks: Sequence[Chunk], keys: Sequence[str]) -> tuple[Rows, Rows]:
    """Split chunks into on-time and late rows (late: older than the channel's newest before)."""
    ontime, late = Rows(), Rows()
    for c in chunks:
        i = c.late_split()
        cols = {k: c.columns[k] for k in keys if k in c.columns}
        if i == 0:
            ontime.extend(c.times, cols)
        else:
            late.extend(c.times[:i], {k: v[:i] for k, v in cols.items()})
            ontime.extend(c.times[i:], {k: v[i:] for k, v in cols.items()})
    return ontime, late


def encode_chunks(
    chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool, position: str
) -> list[bytes]:
    """Bodies for ``chunks`` as live packets: a late one (if any), then the on-time one."""
    ontime, late = split_rows(chunks, keys)
    schema = [fields[k] for k in keys] if with_schema else None
    out = []
    if len(late):
        late.sort()
        out.append(data_body(frame_json(schema, keys, late), position, late=True))
        schema = None
    if len(ontime) or schema is not None:
        out.append(data_body(frame_json(schema, keys, ontime), position))
    return out


def encode_owed(chunks: Sequence[Chunk], keys: Sequence[str], fields: dict[str, FieldDef], with_schema: bool,
                epoch: str) -> tuple[list[bytes], str | None]:
    """What a subscriber owed ``chunks`` (and the schema, if ``with_schema``) is sent, and the
    position it then has (None when there are no chunks: a schema-only packet carries none)."""
    position = chunks[-1].pos.encode(epoch) if chunks else None
    if not chunks and not with_schema:
        return [], None
    return encode_chunks(chunks, keys, fields, with_schema, position or ""), position
