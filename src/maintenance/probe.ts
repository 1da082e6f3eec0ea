// Shared by the cluster and maintenance routes, which both answer per-member
// reports (status, health, hashkv, defragment) in which one member may fail.
import { toProblem, type GrpcLikeError } from '../errors.js';

/** A member's failure in a per-member report: the error table's text, never grpc-js's (which names addresses). */
export const probeError = (err: GrpcLikeError | undefined) => (err ? toProblem(err).message : 'unknown error');
