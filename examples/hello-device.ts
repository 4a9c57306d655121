// A device type of your own, end to end on the simulated host: a `hello`
// backend in dom0 that answers a guest's greeting, and the guest's side of
// it. Run it with `node --import tsx examples/hello-device.ts`.
//
// The backend is a set of callbacks (DeviceOps) that the xenbus registry
// calls as the device walks through the xenbus states; the guest's side is
// a SimFrontend, which follows the handshake as a Linux frontend driver
// does and calls its hooks at each step. Each callback prints its name, so
// the run shows the order in which they fire.
import { SimulatedHost, XenbusRegistry, XenbusState, devicePaths } from 'xenrx';
import type { DeviceOps } from 'xenrx';

/** What the backend keeps per device (returned by `alloc`). */
interface Hello {
  greeting: string | undefined;
}

const hello: DeviceOps<Hello> = {
  alloc: (ctx) => {
    console.log(`backend ${ctx.name}: alloc`);
    return { greeting: undefined };
  },
  init: async (ctx) => {
    console.log(`backend ${ctx.name}: init`);
    // Before InitWait: what the frontend may read as soon as it looks.
    await ctx.writeBackend('feature-reply', '1');
  },
  connect: async (ctx, data) => {
    // The frontend is Initialised: its nodes are there to read.
    data.greeting = await ctx.readFrontend('greeting');
    console.log(`backend ${ctx.name}: connect, the guest says ${JSON.stringify(data.greeting)}`);
    await ctx.writeBackend('reply', `hello ${data.greeting ?? 'stranger'}, from dom0`);
  },
  frontendChanged: (ctx, _data, node) => {
    console.log(`backend ${ctx.name}: frontendChanged ${node}`);
  },
  disconnect: (ctx) => {
    console.log(`backend ${ctx.name}: disconnect`);
  },
  free: (ctx) => {
    console.log(`backend ${ctx.name}: free`);
  },
};

const host = await SimulatedHost.start();
const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
await registry.register('hello', hello);

const guest = await host.createGuest(1, 'guest1');
// Where the toolstack puts the device's backend directory (the guest reads it).
const { backendPath } = devicePaths({ type: 'hello', frontendDomid: guest.domid, devid: 0 });
const fe = await host.addDevice(guest, 'hello', {
  hooks: {
    // The backend waits (InitWait): write what it needs, then Initialised.
    prepare: async () => {
      console.log(`frontend: prepare (backend offers reply: ${(await guest.xs.tryRead(`${backendPath}/feature-reply`)) ?? 'no'})`);
      return { greeting: guest.name };
    },
    connected: async () => {
      console.log(`frontend: connected, dom0 replies ${JSON.stringify(await guest.xs.read(`${backendPath}/reply`))}`);
    },
    closed: () => {
      console.log('frontend: closed');
    },
  },
});
await fe.waitState(XenbusState.Connected);

// The guest closes the device; the backend follows it to Closed.
await fe.close();
await fe.waitBackend(XenbusState.Closed);
await registry.close();
await host.stop();
