/**
 * Checking what the server sends before anything reads it. A message that is not what
 * docs/protocol.md says becomes a sentence saying what is wrong, instead of a crash later in the
 * code that trusted it. The checks are structural and cost O(columns), never O(rows): a data
 * message's cells are checked where they are merged (store/FrameStore.ts).
 */
import type { ChannelInfo, FrameFieldSchema, NoticeMessage, ServerMessage } from './protocol';

export type Parsed =
  | { ok: true; msg: ServerMessage }
  | {
      ok: false;
      /** What is wrong, as a sentence for a user. */
      error: string;
      /** The subscription the message named, when it named one. */
      id?: string;
      /** A message type this client does not know (a newer server?): worth a warning, not an end. */
      unknownType: boolean;
    };

type Obj = Record<string, unknown>;

const HINT = 'is the URL a livedata server, of a version this client supports?';

/** Parse and check one message (a WebSocket text frame or an NDJSON line). */
export function parseServerMessage(text: string): Parsed {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return fail(`the server sent a message that is not JSON (${excerpt(text)}): ${HINT}`);
  }
  return checkServerMessage(obj);
}

/** Check a decoded message. */
export function checkServerMessage(obj: unknown): Parsed {
  if (!isObj(obj) || typeof obj.type !== 'string') {
    return fail(`the server sent a message without a "type" (${excerpt(obj)}): ${HINT}`);
  }
  const id = typeof obj.id === 'string' ? obj.id : undefined;
  const problem = PROBLEMS[obj.type];
  if (!problem) {
    return {
      ok: false,
      error: `the server sent a message of unknown type "${obj.type.slice(0, 40)}"; it was ignored (a newer server than this client?)`,
      id,
      unknownType: true,
    };
  }
  const what = problem(obj);
  if (what) {
    return fail(`the server sent a "${obj.type}" message ${what} (${excerpt(obj)}): ${HINT}`, id);
  }
  // Every field the types promise was checked just above.
  return { ok: true, msg: obj as unknown as ServerMessage };
}

/** Each known type: a phrase saying what is wrong with the message, or undefined when it is fine. */
const PROBLEMS: Record<string, (m: Obj) => string | undefined> = {
  hello: (m) =>
    need(m, 'version', 'string') ?? need(m, 'time', 'number') ?? need(m, 'heartbeat_ms', 'number'),
  data: (m) =>
    need(m, 'id', 'string') ??
    (m.position != null && typeof m.position !== 'string' ? 'whose "position" is not a string' : undefined) ??
    optional(m, 'late', 'boolean') ??
    optional(m, 'bucket_ms', 'number') ??
    frameProblem(m.frame),
  complete: (m) => need(m, 'id', 'string'),
  error: (m) => need(m, 'message', 'string') ?? optional(m, 'id', 'string') ?? optional(m, 'ack', 'string'),
  notice: (m) =>
    need(m, 'text', 'string') ?? need(m, 'level', 'string') ?? optional(m, 'id', 'string') ?? optional(m, 'lost', 'number'),
  heartbeat: (m) => need(m, 'time', 'number'),
  pong: (m) => need(m, 'time', 'number'),
  ack: (m) => need(m, 'ack', 'string'),
  auth: (m) => need(m, 'ok', 'boolean'),
};

function frameProblem(frame: unknown): string | undefined {
  if (!isObj(frame)) {
    return 'without a "frame" object';
  }
  if (frame.schema !== undefined) {
    const schema = frame.schema;
    if (!isObj(schema) || !Array.isArray(schema.fields)) {
      return 'whose frame.schema has no "fields" list';
    }
    for (let i = 0; i < schema.fields.length; i++) {
      const bad = fieldProblem(schema.fields[i]);
      if (bad) {
        return `whose schema field ${i} ${bad}`;
      }
    }
  }
  if (frame.data !== undefined) {
    const data = frame.data;
    if (!isObj(data) || !Array.isArray(data.values)) {
      return 'whose frame.data has no "values" list';
    }
    const values = data.values;
    for (let c = 0; c < values.length; c++) {
      if (!Array.isArray(values[c])) {
        return `whose column ${c} is not a list`;
      }
      if ((values[c] as unknown[]).length !== (values[0] as unknown[]).length) {
        return `whose columns differ in length (${(values[0] as unknown[]).length} and ${(values[c] as unknown[]).length})`;
      }
    }
    if (data.entities != null) {
      if (!Array.isArray(data.entities) || data.entities.some((e) => e != null && !isObj(e))) {
        return 'whose frame.data.entities is not a list of objects';
      }
    }
  }
  return undefined;
}

function fieldProblem(f: unknown): string | undefined {
  if (!isObj(f) || typeof f.name !== 'string') {
    return 'has no "name"';
  }
  if (f.type !== undefined && typeof f.type !== 'string') {
    return 'has a "type" that is not a string';
  }
  if (f.labels != null && !isStringMap(f.labels)) {
    return 'has "labels" that are not strings';
  }
  if (f.config != null && !isObj(f.config)) {
    return 'has a "config" that is not an object';
  }
  return undefined;
}

/**
 * `GET /api/channels`: the list of channels, checked. Entries without a name are an error; the
 * optional facts (schema, rate, ...) are kept only when they have the documented types.
 */
export function parseChannelList(body: unknown): ChannelInfo[] {
  if (!isObj(body) || !Array.isArray(body.channels)) {
    throw new Error(`/api/channels did not answer {"channels": [...]} (${excerpt(body)}): ${HINT}`);
  }
  return body.channels.map((c: unknown, i: number): ChannelInfo => {
    if (!isObj(c) || typeof c.name !== 'string') {
      throw new Error(`/api/channels entry ${i} has no "name" (${excerpt(c)}): ${HINT}`);
    }
    const info: ChannelInfo = { name: c.name };
    if (Array.isArray(c.schema) && c.schema.every((f) => fieldProblem(f) === undefined)) {
      info.schema = c.schema as FrameFieldSchema[];
    }
    if (c.last_time === null || typeof c.last_time === 'number') {
      info.last_time = c.last_time;
    }
    if (typeof c.points_per_s === 'number') {
      info.points_per_s = c.points_per_s;
    }
    if (typeof c.points === 'number') {
      info.points = c.points;
    }
    if (typeof c.generated === 'boolean') {
      info.generated = c.generated;
    }
    if (typeof c.source === 'string') {
      info.source = c.source;
    }
    if (isObj(c.params)) {
      const params = Object.entries(c.params).filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v));
      info.params = Object.fromEntries(params) as ChannelInfo['params'];
    }
    return info;
  });
}

function need(m: Obj, key: string, type: 'string' | 'number' | 'boolean'): string | undefined {
  return typeof m[key] === type ? undefined : `without a ${type} "${key}"`;
}

function optional(m: Obj, key: string, type: 'string' | 'number' | 'boolean'): string | undefined {
  return m[key] === undefined || typeof m[key] === type ? undefined : `whose "${key}" is not a ${type}`;
}

function fail(error: string, id?: string): Parsed {
  return { ok: false, error, id, unknownType: false };
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringMap(v: unknown): boolean {
  return isObj(v) && Object.values(v).every((x) => typeof x === 'string');
}

function excerpt(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'string' ? v : JSON.stringify(v);
  } catch {
    s = String(v);
  }
  s = s ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** A message of an unknown type, told to the subscription it named as a warning notice. */
export function unknownTypeNotice(error: string, id?: string): NoticeMessage {
  return { type: 'notice', id, level: 'warning', text: error };
}
