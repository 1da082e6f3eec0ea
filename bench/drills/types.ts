// The contract between the drill runner (bench/drills.ts) and the drills.
// Every file in bench/drills/ other than this one and lib.ts is a drill
// module: its default export is one Drill (or an array of them). The runner
// imports them in file-name order, starts one 3-member etcd and the gateway
// (as its own process) once, runs each drill, heals the cluster between
// drills, and prints a PASS/FAIL table of every check.
//
//   npm run drills               every drill
//   npm run drills -- <name>...  only the named ones
import type { ChildProcess } from 'node:child_process';
import type { TestCluster } from '../../test/helpers/cluster.js';

export interface DrillContext {
  /** The 3 members (test/helpers/cluster.ts). members[i].pid is the process to freeze or kill. */
  cluster: TestCluster;
  /** http://127.0.0.1:PORT of the gateway; the same across restartGateway(). */
  gatewayUrl: string;
  /** ws://127.0.0.1:PORT, for watch drills. */
  gatewayWsUrl: string;
  /** The gateway's current process. */
  gateway(): ChildProcess;
  /**
   * Kills the gateway with `signal` (SIGKILL by default) and starts a new one
   * on the same port; resolves once it answers /healthz.
   */
  restartGateway(signal?: NodeJS.Signals): Promise<void>;
  /** Index (into cluster.members) of the current leader, asked of etcd itself. */
  leaderIndex(): Promise<number>;
  /**
   * Indexes of the members the gateway process holds TCP connections to (from
   * `ss`). The gateway keeps to the first member it reaches, so this is
   * usually one member: the one whose freezing hurts.
   */
  connectedMembers(): Promise<number[]>;
  /** SIGSTOP a member; resolves once the kernel reports it stopped. The runner thaws it after the drill. */
  freeze(i: number): Promise<void>;
  /** SIGCONT a frozen member. */
  thaw(i: number): void;
  /** Prints one line of what the drill measured, prefixed with its name. */
  log(line: string): void;
  /**
   * Records one check against the target: `target` says what was
   * required, `measured` what was seen (numbers), `pass` whether it held.
   * A drill passes when all its checks pass and run() does not throw.
   */
  check(target: string, pass: boolean, measured: string): void;
  /** A fresh key prefix for this drill (keys under it are the drill's own). */
  prefix: string;
}

export interface Drill {
  /** Short kebab-case name, used on the command line. */
  name: string;
  /** One line: what the drill does to the cluster. */
  description: string;
  run(ctx: DrillContext): Promise<void>;
}
