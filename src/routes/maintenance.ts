// Maintenance: compaction, defragmentation, snapshots, alarms, hashes,
// leadership transfer and check perf, called as the caller (req.etcd).
// Registered in the admin scope (src/auth/admin.ts), which lets only etcd's
// root role through: etcd 3.4 itself lets every user raise and disarm alarms,
// compact, read the status and move the leader.
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { AlarmAction, AlarmType, type IAlarmMember, type IHashKVResponse, type ISnapshotResponse, type IStatusResponse } from 'etcd3';
import { Type } from 'typebox';
import type { EtcdCallOptions, EtcdScope } from '../etcd/connection.js';
import { badRequest, fromEtcdError, isGrpcError, Problem } from '../errors.js';
import { idFromHex, idHex, num } from '../kv/codec.js';
import { errorResponses } from '../schemas/common.js';
import { CheckPerfBody, CompactionBody, EndpointQuery, HashKvQuery, MoveLeaderBody } from '../schemas/maintenance.js';
import { CHECK_PERF_ALIASES, checkPerf } from '../maintenance/check-perf.js';
import { Waits } from '../concurrency/wait.js';
import { probeError } from '../maintenance/probe.js';

export interface MaintenanceRoutesOptions {
  /** Deadline of ordinary etcd calls. */
  timeoutMs: number;
  /** Deadline of each per-member probe (finding the leader, hashkv). */
  probeTimeoutMs: number;
  /** Deadline of a physical compaction and of each member's defragmentation, which can take long on a big backend. */
  longTimeoutMs: number;
}

function alarmsJson(alarms: IAlarmMember[]) {
  return alarms.map((a) => ({ member_id: idHex(a.memberID), alarm: String(a.alarm).toUpperCase() }));
}

const maintenanceRoutes: FastifyPluginAsyncTypebox<MaintenanceRoutesOptions> = async (app, opts) => {
  const deadline = (ms: number) => ({ deadline: Date.now() + ms });
  // Alarm GET changes nothing: safe to move on to another member.
  const readCall: () => EtcdCallOptions = () => ({ ...deadline(opts.timeoutMs), kind: 'read' });
  const listAlarms = (etcd: EtcdScope) => etcd.maintenance.alarm({ action: AlarmAction.Get, memberID: 0, alarm: AlarmType.None }, readCall());

  const waits = new Waits(app);

  app.post(
    '/v1/maintenance/check-perf',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Check the performance of the cluster (etcdctl check perf)',
        description:
          "etcdctl's workloads and verdicts: puts of 256-byte keys and 1 KiB values under `prefix` at the load's rate for `duration` seconds, then " +
          'PASS or FAIL on throughput (above 90% of the rate), the slowest request (under 500 ms) and the standard deviation (under 100 ms). ' +
          'The prefix must be empty and is deleted afterwards, also when the client disconnects. The answer comes when the run ends.',
        body: CheckPerfBody,
        response: { 200: Type.Ref('CheckPerf'), ...errorResponses(403, 409) },
      },
    },
    async (req, reply) => {
      const body = req.body ?? {};
      return waits.run(reply, { onTimeout: () => new Problem(504, 'check_timeout', 'the check ran out of time') }, (scope) =>
        checkPerf(req.etcd, {
          load: CHECK_PERF_ALIASES[body.load ?? 's']!,
          prefix: body.prefix ?? '/etcdctl-check-perf/',
          durationSeconds: body.duration ?? 60,
          autoCompact: body.auto_compact ?? false,
          autoDefrag: body.auto_defrag ?? false,
          timeoutMs: opts.timeoutMs,
          signal: scope.signal,
        }),
      );
    },
  );

  const { endpoints: configured } = app.etcd;
  function configuredEndpoint(endpoint: string | undefined): string | undefined {
    if (endpoint !== undefined && !configured.includes(endpoint)) {
      // The list is not named: it would map the cluster for anyone who asks.
      throw badRequest(`${endpoint} is not a configured endpoint`, 'unknown_endpoint');
    }
    return endpoint;
  }

  app.post(
    '/v1/maintenance/compaction',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Compact the history before a revision (etcdctl compaction)',
        description:
          'Reads and watches below the revision then answer 410. A revision already compacted is 410 too; one in the future is 400 `future_revision`.',
        body: CompactionBody,
        response: { 200: Type.Ref('Compaction'), ...errorResponses(410) },
      },
    },
    async (req, reply) => {
      const physical = req.body.physical ?? false;
      const res = await req.etcd.kv.compact(
        { revision: req.body.revision, physical },
        deadline(physical ? opts.longTimeoutMs : opts.timeoutMs),
      );
      reply.etcdHeaders(res.header);
      return { compact_revision: req.body.revision, physical };
    },
  );

  app.post(
    '/v1/maintenance/defragment',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Defragment members one at a time (etcdctl defrag)',
        description:
          'With `endpoint`, that member only (its failure is the answer\'s error). Without, every configured endpoint in turn, never two at once (a member is unresponsive while it defragments); each result says whether it worked.',
        querystring: EndpointQuery,
        response: { 200: Type.Ref('Defragment'), ...errorResponses() },
      },
    },
    async (req) => {
      const only = configuredEndpoint(req.query.endpoint);
      const endpoints = [];
      let refusal: unknown;
      for (const endpoint of only ? [only] : configured) {
        const started = performance.now();
        const took = () => Math.round((performance.now() - started) * 10) / 10;
        try {
          await req.etcd.execOn(endpoint, 'Maintenance', 'defragment', {}, deadline(opts.longTimeoutMs));
          endpoints.push({ endpoint, defragmented: true, took_ms: took() });
        } catch (err) {
          if (only) throw err;
          // A refusal of the caller (not a member's trouble) is the answer itself.
          if (isGrpcError(err) && [401, 403].includes(fromEtcdError(err).status)) refusal = err;
          endpoints.push({ endpoint, defragmented: false, took_ms: took(), error: probeError(err as never) });
        }
      }
      if (refusal && !endpoints.some((e) => e.defragmented)) throw refusal;
      return { endpoints };
    },
  );

  app.get(
    '/v1/maintenance/snapshot',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Download a snapshot of the backend (etcdctl snapshot save)',
        description:
          'Streamed from one member (`endpoint`, or the best-connected one, named in `X-Etcd-Endpoint`) as etcd sends it, never held in memory. ' +
          'The file is what `etcdctl snapshot save` writes, including the integrity hash `etcdctl snapshot restore` checks. A failure mid-stream cuts the connection, so a truncated download is visible as an incomplete transfer.',
        querystring: EndpointQuery,
        response: {
          200: {
            description: 'The snapshot file.',
            content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(),
        },
      },
    },
    async (req, reply) => {
      const { endpoint, stream } = req.etcd.serverStream<ISnapshotResponse>('Maintenance', 'snapshot', {}, {
        endpoint: configuredEndpoint(req.query.endpoint),
      });
      const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<ISnapshotResponse>;
      // Wait for the first chunk: a member that cannot serve is then an
      // ordinary problem answer instead of a broken download. The call has no
      // deadline (a big backend takes long to send), so bound this wait alone.
      const first = chunks.next();
      first.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const head = await Promise.race([
        first,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            stream.cancel();
            reject(new Problem(504, 'etcd_timeout', `${endpoint} did not start sending the snapshot within ${opts.timeoutMs} ms`));
          }, opts.timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      async function* blobs() {
        for (let next = head; !next.done; next = await chunks.next()) yield next.value.blob;
      }
      const body = Readable.from(blobs(), { objectMode: false });
      // Ends etcd's stream too when the client goes away mid-download.
      body.on('close', () => stream.destroy());
      const stamp = new Date().toISOString().replace(/[-:]|\.\d+/g, '');
      // A stream, not the string the binary schema types the body as.
      return (reply as FastifyReply)
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="etcd-snapshot-${stamp}.db"`)
        .header('x-etcd-endpoint', endpoint)
        .send(body);
    },
  );

  app.get(
    '/v1/maintenance/alarms',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'List raised alarms (etcdctl alarm list)',
        response: { 200: Type.Ref('AlarmList'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const res = await listAlarms(req.etcd);
      reply.etcdHeaders(res.header);
      return { alarms: alarmsJson(res.alarms) };
    },
  );

  app.delete(
    '/v1/maintenance/alarms',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Disarm every alarm (etcdctl alarm disarm)',
        description: 'Answers the alarms it disarmed. Free space first (compaction, defragmentation) or NOSPACE is raised again on the next write over the quota.',
        response: { 200: Type.Ref('AlarmList'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const raised = await listAlarms(req.etcd);
      const disarmed: IAlarmMember[] = [];
      for (const a of raised.alarms) {
        const res = await req.etcd.maintenance.alarm(
          { action: AlarmAction.Deactivate, memberID: a.memberID, alarm: AlarmType[a.alarm as keyof typeof AlarmType] },
          deadline(opts.timeoutMs),
        );
        disarmed.push(...res.alarms);
      }
      reply.etcdHeaders(raised.header);
      return { alarms: alarmsJson(disarmed) };
    },
  );

  app.get(
    '/v1/maintenance/hashkv',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Hash of the key-value history on every member (etcdctl endpoint hashkv)',
        description: 'Members with the same data answer the same hash for the same revision; give `revision` to compare them while writes go on.',
        querystring: HashKvQuery,
        response: { 200: Type.Ref('HashKv'), ...errorResponses(410) },
      },
    },
    async (req, reply) => {
      // grpc-js names the method hashKv (etcd3's hashKV() asks for a method that does not exist).
      const results = await req.etcd.execOnEach<IHashKVResponse>('Maintenance', 'hashKv', { revision: req.query.revision ?? 0 }, deadline(opts.probeTimeoutMs));
      // Every member refusing (a compacted or future revision, etcd down) is the request's error.
      if (results.every((r) => r.error)) throw results[0]!.error;
      reply.etcdHeaders(results.find((r) => r.result)?.result?.header);
      return {
        endpoints: results.map(({ endpoint, tookMs, result, error }) =>
          result
            ? {
                endpoint,
                took_ms: tookMs,
                id: idHex(result.header.member_id),
                hash: num(result.hash),
                revision: num(result.header.revision),
                compact_revision: num(result.compact_revision),
              }
            : { endpoint, took_ms: tookMs, error: probeError(error) },
        ),
      };
    },
  );

  app.post(
    '/v1/maintenance/move-leader',
    {
      schema: {
        tags: ['maintenance'],
        summary: 'Hand leadership to another voting member (etcdctl move-leader)',
        description:
          'Sent to the current leader, which must be one of the configured endpoints (as for etcdctl). A non-member or a learner is 400 `bad_leader_transferee`.',
        body: MoveLeaderBody,
        response: { 200: Type.Ref('MoveLeader'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const statuses = await req.etcd.execOnEach<IStatusResponse>('Maintenance', 'status', {}, deadline(opts.probeTimeoutMs));
      const lead = statuses.find((s) => s.result && s.result.leader !== '0' && s.result.leader === s.result.header.member_id);
      if (!lead) {
        throw new Problem(503, 'no_leader', 'none of the configured endpoints is the leader right now', { headers: { 'retry-after': '1' } });
      }
      const res = await req.etcd
        .execOn<{ header: IStatusResponse['header'] }>(
          lead.endpoint,
          'Maintenance',
          'moveLeader',
          { targetID: idFromHex(req.body.to) },
          deadline(opts.timeoutMs),
        )
        .catch((err: unknown) => {
          // A transfer that ran out of time may still complete: say so, as for any write.
          throw isGrpcError(err) ? fromEtcdError(err, 'write') : err;
        });
      reply.etcdHeaders(res.header ?? lead.result!.header);
      return { leader: idHex(idFromHex(req.body.to)), previous: idHex(lead.result!.leader) };
    },
  );
};

export default maintenanceRoutes;
