// Following an election's leader on the shared watches: the candidates under
// `<name>/` (etcd's election layout), the leader being the one created first.
// Used by the observe transports (SSE, websocket) of /v1/elections and by
// /v3/election/observe (src/v3/observe.ts).
import type { KeyValueJson } from '../kv/codec.js';
import type { WatchEventJson } from './events.js';
import type { TransportSink } from './session.js';

export type LeaderChange = (leader: KeyValueJson | undefined, revision: number) => void;

/**
 * The parts of a subscription sink (with `initial`) that track the leader:
 * `onChange` hears the current state once synced, then each time the leader,
 * or the leader's value, changes (`undefined` when the last candidate left).
 * With `everyWrite`, also each time the leader's key is written again with
 * the same value, as etcd's Observe reports every proclamation.
 */
export function followLeader(onChange: LeaderChange, { everyWrite = false } = {}): Pick<TransportSink, 'initial' | 'synced' | 'events'> {
  const candidates = new Map<string, KeyValueJson>();
  let shown: string | undefined;
  const keyOf = (kv: KeyValueJson) => kv.key ?? `\0${kv.key_base64}`;
  const announce = (revision: number, written?: Set<string>) => {
    let lead: KeyValueJson | undefined;
    for (const kv of candidates.values()) if (!lead || kv.create_revision < lead.create_revision) lead = kv;
    const now = lead ? JSON.stringify([lead.key, lead.key_base64, lead.value, lead.value_base64]) : '';
    const proclaimed = everyWrite && lead !== undefined && written?.has(keyOf(lead)) === true;
    if (now === shown && !proclaimed) return;
    shown = now;
    onChange(lead, revision);
  };
  /** Applies the events; answers the keys they wrote. */
  const apply = (events: WatchEventJson[]) => {
    const written = new Set<string>();
    for (const e of events) {
      const key = keyOf(e.kv);
      if (e.type === 'delete') candidates.delete(key);
      else {
        candidates.set(key, e.kv);
        written.add(key);
      }
    }
    return written;
  };
  return {
    initial: (events) => void apply(events),
    synced: (revision) => announce(revision),
    events: (batch) => announce(batch.revision, apply(batch.events)),
  };
}

/** A leader as the gateway's JSON shows it (SSE `leader` events, websocket `leader` messages). */
export function leaderMessage(name: string, lead: KeyValueJson) {
  const value = lead.value !== undefined ? { value: lead.value } : { value_base64: lead.value_base64 ?? '' };
  // `revision` is the leader's term: the create revision of its key, as campaign answers it.
  return { name, key: lead.key ?? lead.key_base64, ...value, lease: lead.lease, revision: lead.create_revision };
}
