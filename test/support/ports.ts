// Ports for the tests' servers and process groups.
import { once } from 'node:events';
import { type Server, createServer } from 'node:net';

/** `n` different ports that nothing listens on now (the system's picks, all held until each is known). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  for (let i = 0; i < n; i++) {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
  }
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map(async (s) => {
    s.close();
    await once(s, 'close');
  }));
  return ports;
}

/** One port that nothing listens on now. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}
