// etcd's /v3 JSON protocol: the protojson conventions of etcd's grpc-gateway
// (shared/reference/anchors.md §1) between HTTP bodies and etcd3's raw
// clients. One small descriptor table of the messages the gateway serves
// drives both directions:
// - in: proto names or lowerCamel names, base64 bytes, int64/uint64 as JSON
//   numbers or strings (parsed from the text, so IDs above 2^53 stay exact),
//   enums as etcd's names or numbers, unknown fields discarded;
// - out: proto names, base64 bytes, 64-bit integers as strings, enums as
//   etcd's names, zero values omitted (EmitUnpopulated=false), set messages
//   kept even when empty.
// A bad field is a gRPC InvalidArgument, as etcd's gateway answers it.
import { status as GrpcStatus } from '@grpc/grpc-js';
import {
  AlarmAction,
  AlarmType,
  CompareResult,
  CompareTarget,
  DowngradeAction,
  EventType,
  FilterType,
  Permission,
  SortOrder,
  SortTarget,
} from 'etcd3';
import type { KeyValueJson } from '../kv/codec.js';

/** A /v3 error: an etcd-style gRPC status for the protocol's error body. */
export class V3Error extends Error {
  constructor(
    readonly grpcCode: number,
    message: string,
    /** The HTTP status, when not the one grpc-gateway gives the code. */
    readonly httpStatus?: number,
  ) {
    super(message);
    this.name = 'V3Error';
  }
}

const invalid = (message: string) => new V3Error(GrpcStatus.INVALID_ARGUMENT, message);

// ---------------------------------------------------------------------------
// Enums: etcd's wire names, with the numbers etcd3's exported enums use.

type EnumDef = Record<string, number>;

export const ENUMS: Record<string, EnumDef> = {
  SortOrder: { NONE: SortOrder.None, ASCEND: SortOrder.Ascend, DESCEND: SortOrder.Descend },
  SortTarget: { KEY: SortTarget.Key, VERSION: SortTarget.Version, CREATE: SortTarget.Create, MOD: SortTarget.Mod, VALUE: SortTarget.Value },
  CompareResult: { EQUAL: CompareResult.Equal, GREATER: CompareResult.Greater, LESS: CompareResult.Less, NOT_EQUAL: CompareResult.NotEqual },
  CompareTarget: {
    VERSION: CompareTarget.Version,
    CREATE: CompareTarget.Create,
    MOD: CompareTarget.Mod,
    VALUE: CompareTarget.Value,
    LEASE: CompareTarget.Lease,
  },
  FilterType: { NOPUT: FilterType.Noput, NODELETE: FilterType.Nodelete },
  EventType: { PUT: EventType.Put, DELETE: EventType.Delete },
  AlarmType: { NONE: AlarmType.None, NOSPACE: AlarmType.Nospace, CORRUPT: AlarmType.Corrupt },
  AlarmAction: { GET: AlarmAction.Get, ACTIVATE: AlarmAction.Activate, DEACTIVATE: AlarmAction.Deactivate },
  DowngradeAction: { VALIDATE: DowngradeAction.Validate, ENABLE: DowngradeAction.Enable, CANCEL: DowngradeAction.Cancel },
  PermissionType: { READ: Permission.Read, WRITE: Permission.Write, READWRITE: Permission.Readwrite },
};

/** etcd3 answers enums with its proto's CamelCase names (`NotEqual`); etcd spells them `NOT_EQUAL`. */
const squash = (name: string) => name.replace(/_/g, '').toLowerCase();

function enumNumber(def: EnumDef, enumName: string, v: unknown, field: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string') {
    if (/^-?\d+$/.test(v)) return Number(v);
    const hit = Object.keys(def).find((k) => squash(k) === squash(v));
    if (hit !== undefined) return def[hit]!;
  }
  throw invalid(`invalid value for enum type ${enumName} in field ${field}: ${JSON.stringify(v)}`);
}

function enumName(def: EnumDef, v: unknown): string | number {
  const n = typeof v === 'number' ? v : undefined;
  for (const [name, value] of Object.entries(def)) {
    if (n !== undefined ? value === n : squash(name) === squash(String(v))) return name;
  }
  return typeof v === 'number' ? v : String(v);
}

// ---------------------------------------------------------------------------
// Messages: field → type. Scalars: bytes, int64, uint64, int32, uint32,
// bool, string; `enum:<Name>`; `msg:<Name>`; a `[]` suffix is repeated.

type FieldType = string;
type MessageDef = Record<string, FieldType>;

const H = 'msg:ResponseHeader';

export const MESSAGES: Record<string, MessageDef> = {
  ResponseHeader: { cluster_id: 'uint64', member_id: 'uint64', revision: 'int64', raft_term: 'uint64' },
  KeyValue: { key: 'bytes', create_revision: 'int64', mod_revision: 'int64', version: 'int64', value: 'bytes', lease: 'int64' },
  Event: { type: 'enum:EventType', kv: 'msg:KeyValue', prev_kv: 'msg:KeyValue' },

  RangeRequest: {
    key: 'bytes',
    range_end: 'bytes',
    limit: 'int64',
    revision: 'int64',
    sort_order: 'enum:SortOrder',
    sort_target: 'enum:SortTarget',
    serializable: 'bool',
    keys_only: 'bool',
    count_only: 'bool',
    min_mod_revision: 'int64',
    max_mod_revision: 'int64',
    min_create_revision: 'int64',
    max_create_revision: 'int64',
  },
  RangeResponse: { header: H, kvs: 'msg:KeyValue[]', more: 'bool', count: 'int64' },
  PutRequest: { key: 'bytes', value: 'bytes', lease: 'int64', prev_kv: 'bool', ignore_value: 'bool', ignore_lease: 'bool' },
  PutResponse: { header: H, prev_kv: 'msg:KeyValue' },
  DeleteRangeRequest: { key: 'bytes', range_end: 'bytes', prev_kv: 'bool' },
  DeleteRangeResponse: { header: H, deleted: 'int64', prev_kvs: 'msg:KeyValue[]' },
  RequestOp: {
    request_range: 'msg:RangeRequest',
    request_put: 'msg:PutRequest',
    request_delete_range: 'msg:DeleteRangeRequest',
    request_txn: 'msg:TxnRequest',
  },
  ResponseOp: {
    response_range: 'msg:RangeResponse',
    response_put: 'msg:PutResponse',
    response_delete_range: 'msg:DeleteRangeResponse',
    response_txn: 'msg:TxnResponse',
  },
  Compare: {
    result: 'enum:CompareResult',
    target: 'enum:CompareTarget',
    key: 'bytes',
    version: 'int64',
    create_revision: 'int64',
    mod_revision: 'int64',
    value: 'bytes',
    lease: 'int64',
    range_end: 'bytes',
  },
  TxnRequest: { compare: 'msg:Compare[]', success: 'msg:RequestOp[]', failure: 'msg:RequestOp[]' },
  TxnResponse: { header: H, succeeded: 'bool', responses: 'msg:ResponseOp[]' },
  CompactionRequest: { revision: 'int64', physical: 'bool' },
  CompactionResponse: { header: H },

  WatchRequest: { create_request: 'msg:WatchCreateRequest', cancel_request: 'msg:WatchCancelRequest', progress_request: 'msg:Empty' },
  WatchCreateRequest: {
    key: 'bytes',
    range_end: 'bytes',
    start_revision: 'int64',
    progress_notify: 'bool',
    filters: 'enum:FilterType[]',
    prev_kv: 'bool',
    watch_id: 'int64',
    fragment: 'bool',
  },
  WatchCancelRequest: { watch_id: 'int64' },
  WatchResponse: {
    header: H,
    watch_id: 'int64',
    created: 'bool',
    canceled: 'bool',
    compact_revision: 'int64',
    cancel_reason: 'string',
    fragment: 'bool',
    events: 'msg:Event[]',
  },
  Empty: {},

  LeaseGrantRequest: { TTL: 'int64', ID: 'int64' },
  LeaseGrantResponse: { header: H, ID: 'int64', TTL: 'int64', error: 'string' },
  LeaseRevokeRequest: { ID: 'int64' },
  LeaseRevokeResponse: { header: H },
  LeaseKeepAliveRequest: { ID: 'int64' },
  LeaseKeepAliveResponse: { header: H, ID: 'int64', TTL: 'int64' },
  LeaseTimeToLiveRequest: { ID: 'int64', keys: 'bool' },
  LeaseTimeToLiveResponse: { header: H, ID: 'int64', TTL: 'int64', grantedTTL: 'int64', keys: 'bytes[]' },
  LeaseLeasesRequest: {},
  LeaseStatus: { ID: 'int64' },
  LeaseLeasesResponse: { header: H, leases: 'msg:LeaseStatus[]' },

  Member: { ID: 'uint64', name: 'string', peerURLs: 'string[]', clientURLs: 'string[]', isLearner: 'bool' },
  MemberAddRequest: { peerURLs: 'string[]', isLearner: 'bool' },
  MemberAddResponse: { header: H, member: 'msg:Member', members: 'msg:Member[]' },
  MemberRemoveRequest: { ID: 'uint64' },
  MemberUpdateRequest: { ID: 'uint64', peerURLs: 'string[]' },
  MemberListRequest: { linearizable: 'bool' },
  MemberPromoteRequest: { ID: 'uint64' },
  MembersResponse: { header: H, members: 'msg:Member[]' },

  AlarmRequest: { action: 'enum:AlarmAction', memberID: 'uint64', alarm: 'enum:AlarmType' },
  AlarmMember: { memberID: 'uint64', alarm: 'enum:AlarmType' },
  AlarmResponse: { header: H, alarms: 'msg:AlarmMember[]' },
  StatusResponse: {
    header: H,
    version: 'string',
    dbSize: 'int64',
    leader: 'uint64',
    raftIndex: 'uint64',
    raftTerm: 'uint64',
    raftAppliedIndex: 'uint64',
    errors: 'string[]',
    dbSizeInUse: 'int64',
    isLearner: 'bool',
  },
  HashRequest: {},
  HashResponse: { header: H, hash: 'uint32' },
  HashKVRequest: { revision: 'int64' },
  HashKVResponse: { header: H, hash: 'uint32', compact_revision: 'int64' },
  MoveLeaderRequest: { targetID: 'uint64' },
  DowngradeRequest: { action: 'enum:DowngradeAction', version: 'string' },
  DowngradeResponse: { header: H, version: 'string' },
  SnapshotResponse: { header: H, remaining_bytes: 'uint64', blob: 'bytes' },
  HeaderOnly: { header: H },

  AuthStatusResponse: { header: H, enabled: 'bool', authRevision: 'uint64' },
  AuthenticateRequest: { name: 'string', password: 'string' },
  AuthenticateResponse: { header: H, token: 'string' },
  AuthUserAddRequest: { name: 'string', password: 'string', options: 'msg:UserAddOptions' },
  UserAddOptions: { no_password: 'bool' },
  AuthUserNameRequest: { name: 'string' },
  AuthUserChangePasswordRequest: { name: 'string', password: 'string' },
  AuthUserGrantRoleRequest: { user: 'string', role: 'string' },
  AuthUserRevokeRoleRequest: { name: 'string', role: 'string' },
  AuthUserGetResponse: { header: H, roles: 'string[]' },
  AuthUserListResponse: { header: H, users: 'string[]' },
  AuthRoleAddRequest: { name: 'string' },
  AuthRoleRequest: { role: 'string' },
  AuthRoleGetResponse: { header: H, perm: 'msg:Permission[]' },
  AuthRoleListResponse: { header: H, roles: 'string[]' },
  Permission: { permType: 'enum:PermissionType', key: 'bytes', range_end: 'bytes' },
  AuthRoleGrantPermissionRequest: { name: 'string', perm: 'msg:Permission' },
  AuthRoleRevokePermissionRequest: { role: 'string', key: 'bytes', range_end: 'bytes' },

  // v3lock.proto
  LockRequest: { name: 'bytes', lease: 'int64' },
  LockResponse: { header: H, key: 'bytes' },
  UnlockRequest: { key: 'bytes' },

  // v3election.proto
  LeaderKey: { name: 'bytes', key: 'bytes', rev: 'int64', lease: 'int64' },
  CampaignRequest: { name: 'bytes', lease: 'int64', value: 'bytes' },
  CampaignResponse: { header: H, leader: 'msg:LeaderKey' },
  ProclaimRequest: { leader: 'msg:LeaderKey', value: 'bytes' },
  LeaderRequest: { name: 'bytes' },
  LeaderResponse: { header: H, kv: 'msg:KeyValue' },
  ResignRequest: { leader: 'msg:LeaderKey' },
};

/** protoc's json_name: `range_end` → `rangeEnd`; `ID`, `TTL`, `peerURLs` stay. */
export function jsonName(protoName: string): string {
  return protoName.replace(/_([a-zA-Z0-9])/g, (_, c: string) => c.toUpperCase());
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

function integer(v: unknown, type: string, field: string): bigint {
  let text: string | undefined;
  if (typeof v === 'number' && Number.isInteger(v)) text = String(v);
  else if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) text = v.trim();
  if (text === undefined) throw invalid(`invalid value for ${type} field ${field}: ${JSON.stringify(v)}`);
  const n = BigInt(text);
  const [min, max] =
    type === 'int64' ? [INT64_MIN, INT64_MAX] : type === 'uint64' ? [0n, UINT64_MAX] : type === 'int32' ? [-(2n ** 31n), 2n ** 31n - 1n] : [0n, 2n ** 32n - 1n];
  if (n < min || n > max) throw invalid(`value out of range for ${type} field ${field}: ${text}`);
  return n;
}

/** Standard or URL-safe base64, padded or not, as protojson accepts; anything else is refused. */
export function decodeBase64(v: unknown, field: string): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v) || v.replace(/=+$/, '').length % 4 === 1) {
    throw invalid(`invalid value for bytes field ${field}: ${JSON.stringify(v)} is not base64`);
  }
  return Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

function decodeScalar(type: string, v: unknown, field: string): unknown {
  if (type.startsWith('enum:')) {
    const name = type.slice(5);
    return enumNumber(ENUMS[name]!, name, v, field);
  }
  if (type.startsWith('msg:')) return decodeMessage(type.slice(4), v, field);
  switch (type) {
    case 'bytes':
      return decodeBase64(v, field);
    case 'int64':
    case 'uint64':
      // etcd3 takes 64-bit integers as decimal strings: exact beyond 2^53.
      return integer(v, type, field).toString();
    case 'int32':
    case 'uint32':
      return Number(integer(v, type, field));
    case 'bool':
      if (typeof v !== 'boolean') throw invalid(`invalid value for bool field ${field}: ${JSON.stringify(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') throw invalid(`invalid value for string field ${field}: ${JSON.stringify(v)}`);
      return v;
    default:
      throw new Error(`unknown field type ${type}`);
  }
}

/** A JSON request (already parsed with parseJson) → the request object etcd3's raw client takes. */
export function decodeMessage(name: string, json: unknown, path = name): Record<string, unknown> {
  const def = MESSAGES[name];
  if (!def) throw new Error(`unknown message ${name}`);
  if (json === null || json === undefined) return {};
  if (typeof json !== 'object' || Array.isArray(json)) throw invalid(`${path}: expected a JSON object`);
  const input = json as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [field, type] of Object.entries(def)) {
    const camel = jsonName(field);
    const raw = field in input ? input[field] : camel in input ? input[camel] : undefined;
    // protojson reads null as "not set".
    if (raw === undefined || raw === null) continue;
    const where = `${path}.${field}`;
    if (type.endsWith('[]')) {
      if (!Array.isArray(raw)) throw invalid(`${where}: expected a JSON array`);
      out[field] = raw.map((item, i) => decodeScalar(type.slice(0, -2), item, `${where}[${i}]`));
    } else {
      out[field] = decodeScalar(type, raw, where);
    }
  }
  return out;
}

function isZero(type: string, v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (type.startsWith('msg:')) return false;
  if (type.startsWith('enum:')) return enumName(ENUMS[type.slice(5)]!, v) === Object.keys(ENUMS[type.slice(5)]!)[0];
  switch (type) {
    case 'bytes':
      return (v as Buffer).length === 0;
    case 'bool':
      return v === false;
    case 'string':
      return v === '';
    default:
      return String(v) === '0';
  }
}

function encodeScalar(type: string, v: unknown): unknown {
  if (type.startsWith('enum:')) return enumName(ENUMS[type.slice(5)]!, v);
  if (type.startsWith('msg:')) return encodeMessage(type.slice(4), v as Record<string, unknown>);
  switch (type) {
    case 'bytes':
      return Buffer.from(v as Uint8Array).toString('base64');
    case 'int64':
    case 'uint64':
      // Exact: etcd3 hands 64-bit integers over as decimal strings already.
      return BigInt(v as string | number).toString();
    case 'int32':
    case 'uint32':
      return Number(v);
    default:
      return v;
  }
}

/** An etcd3 response object → etcd's JSON (proto names, zero values omitted). */
export function encodeMessage(name: string, input: object | undefined | null): Record<string, unknown> {
  const obj = input as Record<string, unknown> | undefined | null;
  const def = MESSAGES[name];
  if (!def) throw new Error(`unknown message ${name}`);
  const out: Record<string, unknown> = {};
  if (!obj) return out;
  for (const [field, type] of Object.entries(def)) {
    const v = obj[field];
    if (type.endsWith('[]')) {
      if (Array.isArray(v) && v.length > 0) out[field] = v.map((item) => encodeScalar(type.slice(0, -2), item));
    } else if (!isZero(type, v)) {
      out[field] = encodeScalar(type, v);
    }
  }
  return out;
}

/**
 * JSON.parse that keeps integers exact: an integer literal too long for a
 * double (a lease ID such as 7587823380406781187) is turned into a string
 * before parsing, which every int64 field accepts. Other numbers are left as
 * they are; strings are skipped over untouched.
 */
export function parseJson(text: string): unknown {
  let out = '';
  let last = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      continue;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i + 1;
      while (j < text.length && /[0-9eE.+-]/.test(text[j]!)) j++;
      const literal = text.slice(i, j);
      if (/^-?\d{16,}$/.test(literal)) {
        out += `${text.slice(last, i)}"${literal}"`;
        last = j;
      }
      i = j - 1;
    }
  }
  out += text.slice(last);
  try {
    return JSON.parse(out);
  } catch (err) {
    throw invalid(`invalid JSON body: ${(err as Error).message}`);
  }
}

/** A request body (any content type, possibly empty) → the parsed request object. */
export function parseBody(name: string, body: Buffer | string | undefined | null): Record<string, unknown> {
  const text = body === undefined || body === null ? '' : typeof body === 'string' ? body : body.toString('utf8');
  // grpc-gateway treats an empty body as an empty request message.
  if (text.trim() === '') return {};
  return decodeMessage(name, parseJson(text));
}

/** A hub event (the gateway's watch JSON) → etcd's mvccpb.Event JSON. */
export function watchEventToEtcd(ev: { type: 'put' | 'delete'; kv: KeyValueJson; prev_kv?: KeyValueJson }): Record<string, unknown> {
  return encodeMessage('Event', {
    type: ev.type === 'delete' ? 'Delete' : 'Put',
    kv: kvFromGatewayJson(ev.kv),
    prev_kv: ev.prev_kv ? kvFromGatewayJson(ev.prev_kv) : null,
  });
}

/** A key-value in the gateway's watch JSON → etcd's mvccpb.KeyValue fields. */
export function kvFromGatewayJson(kv: KeyValueJson): Record<string, unknown> {
  const bytes = (text: string | undefined, b64: string | undefined) =>
    text !== undefined ? Buffer.from(text, 'utf8') : b64 !== undefined ? Buffer.from(b64, 'base64') : Buffer.alloc(0);
  return {
    key: bytes(kv.key, kv.key_base64),
    value: bytes(kv.value, kv.value_base64),
    create_revision: String(kv.create_revision),
    mod_revision: String(kv.mod_revision),
    version: String(kv.version),
    // Hex as etcdctl prints it → etcd's signed int64.
    lease: kv.lease ? BigInt.asIntN(64, BigInt(`0x${kv.lease}`)).toString() : '0',
  };
}
