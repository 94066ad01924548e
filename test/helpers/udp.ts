/** Loopback UDP sockets for the tests of options wake: 'host' and 'host-first' (bus/host-wake.ts). */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Redis } from 'ioredis';

/** A UDP socket of the test on 127.0.0.1, with the datagrams it got (and where from). */
export interface Listener {
  readonly socket: Socket;
  readonly port: number;
  readonly got: string[];
  readonly from: RemoteInfo[];
}

/** Binds a listener on an ephemeral 127.0.0.1 port; `sockets` collects it for closing after the test. */
export async function listener(sockets: Socket[]): Promise<Listener> {
  const socket = createSocket('udp4');
  sockets.push(socket);
  const got: string[] = [];
  const from: RemoteInfo[] = [];
  socket.on('message', (m, rinfo) => { got.push(m.toString()); from.push(rinfo); });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { socket, port: socket.address().port, got, from };
}

/** Sends one datagram from a throwaway socket. */
export function send(port: number, payload: string | Buffer): Promise<void> {
  const s = createSocket('udp4');
  return new Promise((resolve) => s.send(payload, port, '127.0.0.1', () => { s.close(); resolve(); }));
}

/** Redis's clock in ms (the registry's scores use it). */
export async function redisNowMs(raw: Redis): Promise<number> {
  const [s, us] = await raw.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}
