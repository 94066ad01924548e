/** The demo could not get a server it needs; the message (one sentence) says how to get one. */
export class DemoInfraError extends Error {}
