// Following an election's leader on the shared watches: the candidates under
// `<name>/` (etcd's election layout), the leader being the one created first.
// Used by the observe transports (SSE, websocket) of /v1/elections.
import type { KeyValueJson } from '../kv/codec.js';
import type { WatchEventJson } from './events.js';
import type { TransportSink } from './session.js';

export type LeaderChange = (leader: KeyValueJson | undefined, revision: number) => void;

/**
 * The parts of a subscription sink (with `initial`) that track the leader:
 * `onChange` hears the current state once synced, then each time the leader,
 * or the leader's value, changes (`undefined` when the last candidate left).
 */
export function followLeader(onChange: LeaderChange): Pick<TransportSink, 'initial' | 'synced' | 'events'> {
  const candidates = new Map<string, KeyValueJson>();
  let shown: string | undefined;
  const announce = (revision: number) => {
    let lead: KeyValueJson | undefined;
    for (const kv of candidates.values()) if (!lead || kv.create_revision < lead.create_revision) lead = kv;
    const now = lead ? JSON.stringify([lead.key, lead.key_base64, lead.value, lead.value_base64]) : '';
    if (now === shown) return;
    shown = now;
    onChange(lead, revision);
  };
  const apply = (events: WatchEventJson[]) => {
    for (const e of events) {
      const key = e.kv.key ?? e.kv.key_base64!;
      if (e.type === 'delete') candidates.delete(key);
      else candidates.set(key, e.kv);
    }
  };
  return {
    initial: (events) => apply(events),
    synced: (revision) => announce(revision),
    events: (batch) => {
      apply(batch.events);
      announce(batch.revision);
    },
  };
}

/** A leader as the gateway's JSON shows it (SSE `leader` events, websocket `leader` messages). */
export function leaderMessage(name: string, lead: KeyValueJson) {
  const value = lead.value !== undefined ? { value: lead.value } : { value_base64: lead.value_base64 ?? '' };
  // `revision` is the leader's term: the create revision of its key, as campaign answers it.
  return { name, key: lead.key ?? lead.key_base64, ...value, lease: lead.lease, revision: lead.create_revision };
}
