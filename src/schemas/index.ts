// Every schema that routes name by $ref: registered once on the app (src/app.ts),
// so validation, serialization and the OpenAPI document share one definition.
import { AdminDoneSchema, NameListSchema, PermissionSchema, RoleSchema, UserSchema } from './admin.js';
import { TicketSchema, TokenRequestSchema, TokenSchema } from './auth.js';
import { ClusterHealthSchema, ClusterStatusSchema, EndpointStatusSchema, MemberAddedSchema, MemberListSchema, MemberSchema } from './cluster.js';
import { ProblemSchema } from './common.js';
import { ElectionLeaderSchema, ResignedSchema } from './elections.js';
import { DeleteResultSchema, KeyValueSchema, ListingSchema, PutResultSchema } from './kv.js';
import { LeaseInfoSchema, LeaseListSchema, LeaseRevokedSchema, LeaseSchema } from './leases.js';
import { LockReleasedSchema, LockSchema } from './locks.js';
import { AlarmListSchema, CheckPerfSchema, CompactionSchema, DefragmentSchema, HashKvSchema, MoveLeaderSchema } from './maintenance.js';
import { TxnCompareSchema, TxnOpResponseSchema, TxnOpSchema, TxnRequestSchema, TxnResponseSchema } from './txn.js';
import { LongPollResultSchema, WatchKeepAliveSchema, WatchObserveSchema, WatchServerMessageSchema, WatchSubscribeSchema, WatchUnsubscribeSchema } from './watch.js';

/** In the order the OpenAPI document lists them. */
export const sharedSchemas = [
  ProblemSchema,
  KeyValueSchema,
  ListingSchema,
  PutResultSchema,
  DeleteResultSchema,
  TxnCompareSchema,
  TxnOpSchema,
  TxnRequestSchema,
  TxnOpResponseSchema,
  TxnResponseSchema,
  LeaseSchema,
  LeaseInfoSchema,
  LeaseListSchema,
  LeaseRevokedSchema,
  LockSchema,
  LockReleasedSchema,
  ElectionLeaderSchema,
  ResignedSchema,
  MemberSchema,
  MemberListSchema,
  MemberAddedSchema,
  EndpointStatusSchema,
  ClusterStatusSchema,
  ClusterHealthSchema,
  CompactionSchema,
  CheckPerfSchema,
  DefragmentSchema,
  AlarmListSchema,
  HashKvSchema,
  MoveLeaderSchema,
  WatchSubscribeSchema,
  WatchUnsubscribeSchema,
  WatchKeepAliveSchema,
  WatchObserveSchema,
  WatchServerMessageSchema,
  LongPollResultSchema,
  TokenRequestSchema,
  TokenSchema,
  TicketSchema,
  PermissionSchema,
  UserSchema,
  RoleSchema,
  NameListSchema,
  AdminDoneSchema,
];
