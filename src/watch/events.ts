// etcd watch events → our JSON, grouped by revision: etcd delivers every event
// of one revision (one txn) in the same response, and clients get them as one
// batch, so a multi-key txn is never seen half-applied.
import type { IEvent } from 'etcd3';
import { kvToJson, num, type KeyValueJson } from '../kv/codec.js';

export interface WatchEventJson {
  type: 'put' | 'delete';
  kv: KeyValueJson;
  prev_kv?: KeyValueJson;
}

export interface EventBatch {
  revision: number;
  events: WatchEventJson[];
  /** Approximate JSON size, for buffer accounting. */
  bytes: number;
  /** `events` serialized once, shared by every subscriber of the batch. */
  eventsJson?: string;
}

/** The batch's events as JSON, computed once however many subscribers receive it. */
export function eventsJson(batch: EventBatch): string {
  batch.eventsJson ??= JSON.stringify(batch.events);
  return batch.eventsJson;
}

export function eventToJson(ev: IEvent): WatchEventJson {
  const isDelete = String(ev.type).toUpperCase() === 'DELETE' || (ev.type as unknown) === 1;
  const out: WatchEventJson = { type: isDelete ? 'delete' : 'put', kv: kvToJson(ev.kv, !isDelete) };
  if (ev.prev_kv) out.prev_kv = kvToJson(ev.prev_kv);
  return out;
}

export function groupByRevision(events: IEvent[]): EventBatch[] {
  const batches: EventBatch[] = [];
  for (const ev of events) {
    const revision = num(ev.kv.mod_revision);
    let batch = batches[batches.length - 1];
    if (!batch || batch.revision !== revision) {
      batch = { revision, events: [], bytes: 0 };
      batches.push(batch);
    }
    batch.events.push(eventToJson(ev));
    batch.bytes += ev.kv.key.length + ev.kv.value.length + (ev.prev_kv ? ev.prev_kv.key.length + ev.prev_kv.value.length : 0) + 96;
  }
  return batches;
}

export interface EventFilters {
  noPut?: boolean;
  noDelete?: boolean;
}

/** Applies a subscriber's filters; null when nothing is left to send. */
export function filterBatch(batch: EventBatch, filters: EventFilters): EventBatch | null {
  if (!filters.noPut && !filters.noDelete) return batch;
  const events = batch.events.filter((e) => (e.type === 'put' ? !filters.noPut : !filters.noDelete));
  return events.length ? { ...batch, events } : null;
}
