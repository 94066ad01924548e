import cluster, { type Worker } from 'node:cluster';
import { BroadcastChannel } from 'node:worker_threads';
import { HELLO_CHANNEL, isRelayMessage, topicChannel, type HelloMessage, type RefuseMessage, type StreamMessage } from './protocol.js';

/** How the hub reaches one kind of subscriber. */
export interface HubTransport {
  /** Sends one stream message to the topic's subscribers; returns how many sends it made. */
  send(topic: string, msg: StreamMessage): number;
  close(): void;
}

export type OnHello = (m: HelloMessage, reply: (r: RefuseMessage) => void) => void;
/** IPC only: a refusal to send instead of subscribing (the hub's minWorkers advice), or undefined. */
export type Advise = (m: HelloMessage, workers: number) => RefuseMessage | undefined;

/** A process reachable over node IPC: a node:cluster `Worker` or a `ChildProcess` forked with IPC. */
export interface IpcTarget {
  send(message: object, callback?: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  once(event: 'exit' | 'disconnect', listener: () => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
  readonly connected?: boolean;
  isConnected?(): boolean;
}

const isConnected = (t: IpcTarget): boolean => (typeof t.isConnected === 'function' ? t.isConnected() : t.connected !== false);

/**
 * node IPC: in the node:cluster primary it serves every worker (forked before or after the hub
 * started); other children are added with `attach`. A worker subscribes to a topic with a
 * hello; it is dropped when it exits or disconnects. IPC keeps order and never drops a message
 * while the channel is open, so each worker sees the topic's messages in sequence.
 */
export class IpcTransport implements HubTransport {
  readonly #subs = new Map<string, Set<IpcTarget>>();
  readonly #attached = new Map<IpcTarget, (m: unknown) => void>();
  readonly #onHello: OnHello;
  readonly #advise: Advise;
  readonly #onSendError: () => void;
  readonly #onClusterMessage = (worker: Worker, m: unknown): void => this.#message(worker, m);
  readonly #onClusterExit = (worker: Worker): void => this.#drop(worker);

  constructor(onHello: OnHello, advise: Advise, onSendError: () => void) {
    this.#onHello = onHello;
    this.#advise = advise;
    this.#onSendError = onSendError;
    if (cluster.isPrimary) {
      cluster.on('message', this.#onClusterMessage);
      cluster.on('exit', this.#onClusterExit);
      cluster.on('disconnect', this.#onClusterExit);
    }
  }

  attach(child: IpcTarget): void {
    if (this.#attached.has(child)) return;
    const on = (m: unknown): void => this.#message(child, m);
    this.#attached.set(child, on);
    child.on('message', on);
    child.once('exit', () => this.#drop(child));
    child.once('disconnect', () => this.#drop(child));
  }

  count(topic: string): number { return this.#subs.get(topic)?.size ?? 0; }

  /** Processes this transport serves: node:cluster workers of this primary plus attached children. */
  workers(): number {
    return (cluster.isPrimary ? Object.keys(cluster.workers ?? {}).length : 0) + this.#attached.size;
  }

  send(topic: string, msg: StreamMessage): number {
    const subs = this.#subs.get(topic);
    if (subs === undefined) return 0;
    let n = 0;
    for (const target of subs) if (this.#post(target, msg)) n++;
    return n;
  }

  close(): void {
    cluster.off('message', this.#onClusterMessage);
    cluster.off('exit', this.#onClusterExit);
    cluster.off('disconnect', this.#onClusterExit);
    for (const [child, on] of this.#attached) child.off('message', on);
    this.#attached.clear();
    this.#subs.clear();
  }

  #message(target: IpcTarget, m: unknown): void {
    if (!isRelayMessage(m) || (m.type !== 'hello' && m.type !== 'bye')) return;
    let subs = this.#subs.get(m.topic);
    if (m.type === 'bye') {
      subs?.delete(target);
      return;
    }
    // A subscribed cache stays subscribed: advice to read directly is for caches still opening
    // (an open cache ignores it, and would never get a message again).
    const advice = subs?.has(target) ? undefined : this.#advise(m, this.workers());
    if (advice !== undefined) {
      this.#post(target, advice);
      return;
    }
    if (subs === undefined) this.#subs.set(m.topic, (subs = new Set()));
    const topicSubs = subs;
    topicSubs.add(target);
    this.#onHello(m, (r) => {
      topicSubs.delete(target); // a refused cache gets no stream messages
      this.#post(target, r);
    });
  }

  #post(target: IpcTarget, msg: object): boolean {
    if (!isConnected(target)) {
      this.#drop(target);
      return false;
    }
    try {
      target.send(msg, (err) => { if (err) this.#onSendError(); });
      return true;
    } catch {
      this.#onSendError();
      this.#drop(target);
      return false;
    }
  }

  #drop(target: IpcTarget): void {
    for (const subs of this.#subs.values()) subs.delete(target);
  }
}

/**
 * BroadcastChannel: worker threads of this process (and caches in the hub's own thread) say
 * hello on one shared channel; each topic then has its own channel. Channels are unref'd, so
 * the hub never keeps the process alive on their account.
 */
export class BroadcastTransport implements HubTransport {
  readonly #hello: BroadcastChannel;
  readonly #channels = new Map<string, BroadcastChannel>();

  constructor(onHello: OnHello) {
    this.#hello = new BroadcastChannel(HELLO_CHANNEL);
    this.#hello.unref();
    this.#hello.onmessage = (ev) => {
      const m = (ev as MessageEvent).data as unknown;
      if (!isRelayMessage(m) || m.type !== 'hello') return;
      const ch = this.#channel(m.topic);
      onHello(m, (r) => ch.postMessage(r));
    };
  }

  send(topic: string, msg: StreamMessage): number {
    const ch = this.#channels.get(topic);
    if (ch === undefined) return 0;
    ch.postMessage(msg);
    return 1;
  }

  close(): void {
    this.#hello.close();
    for (const ch of this.#channels.values()) ch.close();
    this.#channels.clear();
  }

  #channel(topic: string): BroadcastChannel {
    let ch = this.#channels.get(topic);
    if (ch === undefined) {
      ch = new BroadcastChannel(topicChannel(topic));
      ch.unref();
      this.#channels.set(topic, ch);
    }
    return ch;
  }
}
