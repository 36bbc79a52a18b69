'use strict';
// The pi extension pii loads into pi (`pi -e <this file>`; it ships with the preload). pi's tools
// act for the model, and the model's instructions may come from the remote project (its
// AGENTS.md, a file it reads). Paths that stay on this machine (route.cjs) are reachable only by
// name, so this blocks every tool call that names one the tools may not use: pi's agent dir
// (keys, settings, other sessions), pii's scratch dir, the terminal; writes to pi's install and
// temp dirs. boundary.cjs decides (`toolCall`); bash runs on the remote and is not checked.
// Outside pii (no preload) it refuses to load.
//
// Fail closed: pi reports an extension that throws on stderr and goes on without it, which would
// leave pi's tools unguarded. So a guard that cannot register (a pi whose extension API changed:
// no `on`, `on` refusing `tool_call`) ends the process with one line instead of throwing.

const EXIT_UNGUARDED = 78; // EX_CONFIG

function fatal(why) {
  process.stderr.write(
    `pii: pi-bridge's tool guard could not register in this pi (${why}); ` +
      "stopping: pi's tools would otherwise reach this machine's files unchecked.\n",
  );
  process.exit(EXIT_UNGUARDED);
}

module.exports = function piBridgeGuard(pi) {
  const boundary = globalThis[Symbol.for('pi-bridge.boundary')];
  if (!boundary) throw new Error('pi-bridge-guard runs only under pii (no pi-bridge preload in this process)');
  if (!pi || typeof pi.on !== 'function') fatal('the extension API has no on()');
  try {
    pi.on('tool_call', (event, ctx) => {
      const reason = boundary.toolCall(event.toolName, event.input, ctx && typeof ctx.cwd === 'string' ? ctx.cwd : undefined);
      return reason ? { block: true, reason } : undefined;
    });
  } catch (e) {
    fatal(`on('tool_call') threw: ${e && e.message ? e.message : e}`);
  }
};
