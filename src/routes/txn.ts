import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { txnGuard } from '../auth/txn-guard.js';
import { num } from '../kv/codec.js';
import { errorResponses } from '../schemas/common.js';
import type { TxnRequestJson } from '../schemas/txn.js';
import { responsesToJson, txnSchemaErrorFormatter, txnToEtcd } from '../txn/convert.js';

export interface TxnRoutesOptions {
  listMaxKeys: number;
}

const txnRoutes: FastifyPluginAsyncTypebox<TxnRoutesOptions> = async (app, opts) => {
  app.post(
    '/v1/txn',
    {
      schemaErrorFormatter: txnSchemaErrorFormatter,
      schema: {
        tags: ['txn'],
        summary: 'Run a transaction: compares, then the success or the failure operations',
        description:
          'Atomic: every compare is evaluated and one branch applied at a single revision. ' +
          '`succeeded` is always present. A refused request names the operation at fault (`success[3]: ...`, and `operation` in the problem). ' +
          "With authentication on, a put's `prev_kv` needs read permission on its key and its `lease` may not be another subject's (403 `permission_denied` / `lease_not_owned`), nested txns included. " +
          'Never retried by the gateway: on 504 with `outcome: "unknown"` read before retrying.',
        body: Type.Ref('TxnRequest'),
        response: {
          200: Type.Ref('TxnResponse'),
          ...errorResponses(403, 404, 410, 413),
        },
      },
    },
    async (req, reply) => {
      const body = req.body as TxnRequestJson;
      const txn = txnToEtcd(body, { maxKeys: opts.listMaxKeys });
      await txnGuard(app.etcd, req)?.txn(txn);
      const res = await req.etcd.kv.txn(txn);
      reply.etcdHeaders(res.header);
      const ops = (res.succeeded ? body.success : body.failure) ?? [];
      return {
        succeeded: Boolean(res.succeeded),
        revision: num(res.header.revision),
        responses: responsesToJson(ops, res.responses),
      };
    },
  );
};

export default txnRoutes;
