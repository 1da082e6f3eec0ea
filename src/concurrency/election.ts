// Leader elections interoperable with `etcdctl elect` and etcd's v3election
// service (concurrency.Election): a candidate's key is `<name>/<lease %x>`
// holding its value, and the leader is the candidate with the lowest create
// revision (see queue.ts). The leader's key and create revision identify its
// term: proclaim and resign compare them, so a candidate whose key expired
// and was created again cannot act on the old term.
import { CompareResult, CompareTarget, type IKeyValue, type IResponseHeader } from 'etcd3';
import { Problem } from '../errors.js';
import type { EtcdScope } from '../etcd/connection.js';
import { leaseHex, num, prefixEnd } from '../kv/codec.js';
import { first, foreignKey, join, leave, LostPlace, waitTurn, type Joined } from './queue.js';
import { GrantedLeases, revokeQuietly, Session, type LeaseChoice, type SessionDeps } from './session.js';
import type { WaitScope } from './wait.js';

export interface Leader {
  key: string;
  value: Buffer;
  /** Lease ID, 16 hex digits. */
  lease: string | null;
  /** Create revision of the leader's key: identifies the term. */
  revision: number;
  header: IResponseHeader;
}

export function electionPrefix(name: string): string {
  return `${name}/`;
}

const notCandidate = (key: string) =>
  new Problem(404, 'not_a_candidate', `${key} is not in the election: it resigned, its lease ran out, or it never campaigned`);

const notLeader = (detail: string) => new Problem(409, 'election_not_leader', detail);

/** Campaigns and waits until elected; cleans up like acquire() in mutex.ts when the wait ends early. */
export async function campaign(
  deps: SessionDeps,
  granted: GrantedLeases,
  name: string,
  value: Buffer,
  choice: LeaseChoice,
  scope: Pick<WaitScope, 'signal' | 'gone'>,
): Promise<Leader> {
  const prefix = Buffer.from(electionPrefix(name));
  const session = await Session.open(deps, choice);
  const key = electionPrefix(name) + session.keySuffix;
  const keyBytes = Buffer.from(key);
  let joined: Joined | undefined;
  session.keepAlive();
  try {
    joined = await join(deps.etcd, keyBytes, value, session.id);
    // Campaigning again with a lease already in the election updates its value, as Go does.
    if (!joined.created && !joined.value.equals(value)) await proclaimAt(deps.etcd, keyBytes, joined.createRevision, value, false);
    const header = await waitTurn(deps.etcd, prefix, keyBytes, joined.createRevision, scope.signal);
    if (scope.gone()) throw scope.signal.reason;
    if (session.granted) granted.add(key, session.id);
    return { key, value, lease: session.hex, revision: joined.createRevision, header };
  } catch (err) {
    if (!(await session.revokeIfGranted()) && joined?.created) {
      await leave(deps.etcd, keyBytes, joined.createRevision).catch((e: unknown) =>
        deps.log.warn({ key, err: (e as Error).message }, 'could not remove a candidate key; its lease TTL will'),
      );
    }
    if (err instanceof LostPlace) {
      throw new Problem(409, 'candidacy_lost', `the lease ${session.hex} ran out or ${key} was deleted while campaigning`);
    }
    throw err;
  } finally {
    session.stopKeepAlive();
  }
}

function leaderOf(kv: IKeyValue, header: IResponseHeader): Leader {
  return { key: kv.key.toString(), value: kv.value, lease: leaseHex(kv.lease), revision: num(kv.create_revision), header };
}

/** The current leader (etcd's Leader: the first-created key under the prefix). */
export async function leader(etcd: EtcdScope, name: string): Promise<Leader> {
  const { kv, header } = await first(etcd, Buffer.from(electionPrefix(name)));
  if (!kv) throw new Problem(404, 'election_no_leader', `the election ${JSON.stringify(name)} has no leader`);
  return leaderOf(kv, header);
}

/**
 * The term a request names: the key's create revision, given or read. A
 * revision the caller gives pins the term; without it, the term is whatever
 * the key is now.
 */
async function termOf(etcd: EtcdScope, name: string, key: string, revision: number | undefined): Promise<number> {
  if (!GrantedLeases.leaseOfKey(key, electionPrefix(name))) throw foreignKey('candidate', name);
  if (revision !== undefined) return revision;
  const res = await etcd.kv.range({ key: Buffer.from(key) });
  const kv = res.kvs[0];
  if (!kv) throw notCandidate(key);
  return num(kv.create_revision);
}

/**
 * Puts a new value on the leader's key, in one transaction that also checks
 * that the key is still the same term and that no key under the prefix is
 * older (so a waiting candidate cannot proclaim). The key keeps its lease.
 */
async function proclaimAt(etcd: EtcdScope, key: Buffer, revision: number, value: Buffer, mustLead: boolean, prefix?: Buffer) {
  const res = await etcd.kv.txn({
    compare: [
      { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: revision },
      ...(mustLead && prefix
        ? [{ key: prefix, range_end: prefixEnd(prefix), target: CompareTarget.Create, result: CompareResult.Greater, create_revision: revision - 1 }]
        : []),
    ],
    // etcd skips the read check of a prev_kv inside a txn (src/auth/txn-guard.ts);
    // the compare on the same key above is checked for read, which covers it.
    success: [{ request_put: { key, value, ignore_lease: true, prev_kv: true } }],
    failure: [{ request_range: { key } }],
  });
  const keyText = key.toString();
  if (!res.succeeded) {
    const current = res.responses[0]!.response_range!.kvs[0];
    if (!current) throw notCandidate(keyText);
    if (num(current.create_revision) !== revision) {
      throw notLeader(`${keyText} was created again at revision ${current.create_revision}: the term at revision ${revision} is over`);
    }
    throw notLeader(`${keyText} is a candidate but not the leader`);
  }
  return { res, prev: res.responses[0]!.response_put!.prev_kv };
}

/** Announces a new value as leader (etcd's Proclaim). */
export async function proclaim(etcd: EtcdScope, name: string, key: string, revision: number | undefined, value: Buffer): Promise<Leader> {
  const term = await termOf(etcd, name, key, revision);
  const { res, prev } = await proclaimAt(etcd, Buffer.from(key), term, value, true, Buffer.from(electionPrefix(name)));
  return { key, value, lease: leaseHex(prev?.lease), revision: term, header: res.header };
}

/** Gives up leadership or candidacy (etcd's Resign: delete the key of that term). */
export async function resign(
  deps: SessionDeps,
  granted: GrantedLeases,
  name: string,
  key: string,
  revision: number | undefined,
): Promise<{ header: IResponseHeader; leaseRevoked: boolean }> {
  const term = await termOf(deps.etcd, name, key, revision);
  const keyBytes = Buffer.from(key);
  const res = await deps.etcd.kv.txn({
    compare: [{ key: keyBytes, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: term }],
    success: [{ request_delete_range: { key: keyBytes } }],
    failure: [{ request_range: { key: keyBytes } }],
  });
  if (!res.succeeded) {
    const current = res.responses[0]!.response_range!.kvs[0];
    if (!current) throw notCandidate(key);
    throw notLeader(`${key} was created again at revision ${current.create_revision}: the term at revision ${term} is over`);
  }
  const lease = granted.take(key);
  return { header: res.header, leaseRevoked: lease ? await revokeQuietly(deps, lease) : false };
}
