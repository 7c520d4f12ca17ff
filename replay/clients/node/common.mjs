// What the JavaScript drivers share: the line protocol with rtreplay's Python side, loading the library
// from the project that rtreplay checks, the recorded turns and their pacing, and the playback clock.
//
// Protocol. rtreplay starts `node --experimental-import-meta-resolve <driver>.mjs --serve BASE`, where
// BASE is the directory Node's module resolution starts from, and writes one JSON line per case on stdin
// (the Target); a `stop` line tells the driver to close the case's connection, and the end of stdin ends
// the worker. The driver reports on stdout in lines starting with MARK (`{"ready": true}` once the library
// is loaded, `{"started": true}` when it takes a case, `{"note": …}`, `{"crashed": …}`, `{"late": …}` for
// what an earlier case's library said, and `{"done": true, "reusable": …}` after each case); every other
// line, on stdout or stderr, is the library's own output and goes to the case's log. `<driver>.mjs --version BASE`
// prints `{"versions": {package: version or null}}` for the packages the driver loads, resolved from BASE.

import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MARK = '@rtreplay ';
const NOTE_CHARS = 500;
// Same pacing as the Python drivers (replay/clients/_support.py).
const TURN_GAP_MS = 500;
const RESPONSE_IDLE_TIMEOUT_MS = 30_000;
export const CLOSE_TIMEOUT_MS = 2_000;

function send(message) {
  process.stdout.write(MARK + JSON.stringify(message) + '\n');
}

// The case each callback belongs to: a library session of an earlier case can still fire (a late error,
// a reconnect) while the worker plays the next one, and must not be taken for it.
const caseOf = new AsyncLocalStorage();
let current = null; // the case being played: { retired }

export function note(text) {
  const origin = caseOf.getStore();
  const late = origin !== undefined && origin !== current;
  send(late ? { late: String(text).slice(0, NOTE_CHARS) } : { note: String(text).slice(0, NOTE_CHARS) });
}

/** An error or an error event as one text: its stack where it has one. */
export function describe(error) {
  if (error instanceof Error) return String(error.stack ?? error);
  const inner = error?.error ?? error?.message;
  if (inner instanceof Error) return String(inner.stack ?? inner);
  if (typeof inner === 'string') return inner;
  try {
    return typeof error === 'object' && error !== null ? JSON.stringify(error) : String(error);
  } catch {
    return String(error);
  }
}

/**
 * An error nobody caught. In the case being played it is that case's crash and, as for any Node app,
 * the end of the process. From an earlier case's library it is logged, and the worker retires after
 * the current case.
 */
function uncaught(error) {
  const origin = caseOf.getStore();
  if (current !== null && (origin === undefined || origin === current)) {
    send({ crashed: describe(error) });
    process.exit(1);
  }
  send({ late: `an earlier case's library crashed: ${describe(error)}` });
  if (current === null) process.exit(1);
  current.retired = true;
}

/** A file URL inside `base`: bare specifiers resolve from there, as from a module of that project. */
function parentURL(base) {
  return pathToFileURL(join(base, 'rtreplay-driver.mjs')).href;
}

/** Resolve `specifier` as code in `base` would (needs --experimental-import-meta-resolve on Node 20). */
function resolveFrom(base, specifier) {
  return import.meta.resolve(specifier, parentURL(base));
}

/** The version of package `name` as resolved from `base`, or null when it does not resolve. */
function packageVersion(base, name) {
  let dir;
  try {
    dir = dirname(fileURLToPath(resolveFrom(base, name)));
  } catch {
    return null;
  }
  for (;;) {
    try {
      const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (meta.name === name) return meta.version ?? null;
    } catch {
      // no package.json at this level: keep walking up
    }
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

/** An event that can be awaited, with an optional bound; `wait` resolves to whether it was set. */
export class Signal {
  #waiters = new Set();

  constructor(isSet = false) {
    this.isSet = isSet;
  }

  set() {
    this.isSet = true;
    for (const wake of this.#waiters) wake(true);
    this.#waiters.clear();
  }

  clear() {
    this.isSet = false;
  }

  wait(timeoutMs) {
    if (this.isSet) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer;
      const wake = (value) => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve(value);
      };
      if (timeoutMs !== undefined) timer = setTimeout(() => wake(false), timeoutMs);
      this.#waiters.add(wake);
    });
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settle `promise` within `ms`; a rejection or a timeout is noted, never thrown. */
export async function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    if ((await Promise.race([promise, timeout])) === 'timeout') note(`${what}: no answer within ${ms} ms`);
  } catch (error) {
    note(`${what} failed: ${error?.message ?? error}`);
  } finally {
    clearTimeout(timer);
  }
}

/** A simulated real-time player: starts at the first audio received, never plays ahead of it. */
export class PlaybackClock {
  firstAt = null;
  receivedMs = 0;

  add(ms) {
    this.firstAt ??= performance.now();
    this.receivedMs += ms;
  }

  /** min(received, elapsed since the first audio) at `at` (default: now), in whole ms. */
  playedMs(at = performance.now()) {
    if (this.firstAt === null) return 0;
    return Math.floor(Math.min(this.receivedMs, at - this.firstAt));
  }

  /** The item's audio is complete (`done`) and every received ms has played by `at`. */
  finished(done, at = performance.now()) {
    return done && this.firstAt !== null && this.playedMs(at) >= this.receivedMs;
  }
}

export const PCM_BYTES_PER_MS = 48; // pcm16 at 24 kHz, the only output format these cases use

/** The recorded response.create events, each with the conversation.item.create events before it. */
export function recordedTurns(script) {
  const turns = [];
  let items = [];
  for (const event of script) {
    if (event.type === 'conversation.item.create') items.push(event);
    else if (event.type === 'response.create') {
      turns.push({ items, response: event });
      items = [];
    }
  }
  return turns;
}

/** The text of the user messages among a turn's items: what the app's user typed. */
export function userTexts(turn) {
  const texts = [];
  for (const { item = {} } of turn.items) {
    if ((item.type ?? 'message') !== 'message' || item.role !== 'user') continue;
    const parts = (item.content ?? []).filter((p) => p.type === 'input_text' || p.type === 'text');
    const text = parts.map((p) => String(p.text ?? '')).join(' ');
    if (text) texts.push(text);
  }
  return texts;
}

/** The recorded session.update's session, as the app under test configured it. */
export function recordedSession(script) {
  return script.find((event) => event.type === 'session.update')?.session ?? {};
}

/** Turn N>1 waits for the previous response.done, then TURN_GAP_MS without a barge-in. */
export async function turnMayStart(idle, bargeIn) {
  if (!(await idle.wait(RESPONSE_IDLE_TIMEOUT_MS))) {
    note('the previous response never finished; starting the next turn anyway');
  }
  await bargeIn.wait(TURN_GAP_MS);
  return !bargeIn.isSet;
}

/**
 * The driver's entry point, a worker that runs one case at a time.
 *
 * `<driver>.mjs --serve BASE` imports `modules` from BASE once (the CPU-heavy part), reports `ready`,
 * then takes cases from stdin: for each target line it calls `drive(ctx, ...modules)`, which connects,
 * plays the case and returns once `ctx.stop` is set (a `stop` line) or its connection is gone, and
 * reports `done`. The end of stdin stops the current case and ends the worker. ctx has target and stop.
 */
export async function runDriver({ packages, modules, drive }) {
  const [mode, base] = process.argv.slice(2);
  if (mode === '--version') {
    send({ versions: Object.fromEntries(packages.map((name) => [name, packageVersion(base, name)])) });
    return;
  }
  process.on('unhandledRejection', (reason) => note(`unhandled rejection: ${describe(reason)}`));
  process.on('uncaughtException', uncaught);
  const cases = []; // [target, stop] in arrival order; a `stop` line is for the latest case
  const arrived = new Signal();
  let latest = new Signal();
  let closed = false;
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === 'stop') latest.set();
    else if (line.trim()) {
      latest = new Signal();
      cases.push([JSON.parse(line), latest]);
      arrived.set();
    }
  });
  lines.on('close', () => {
    closed = true;
    latest.set();
    arrived.set();
  });
  let loaded;
  try {
    loaded = [];
    for (const specifier of modules) loaded.push(await import(resolveFrom(base, specifier)));
  } catch (error) {
    send({ crashed: describe(error) });
    process.exit(1);
  }
  send({ ready: true });
  for (;;) {
    while (cases.length === 0 && !closed) {
      arrived.clear();
      await arrived.wait();
    }
    if (cases.length === 0) break;
    const [target, stop] = cases.shift();
    const record = { retired: false };
    current = record;
    send({ started: true });
    try {
      await caseOf.run(record, () => drive({ target, stop }, ...loaded));
    } catch (error) {
      send({ crashed: describe(error) });
      record.retired = true;
    }
    current = null;
    send({ done: true, reusable: !record.retired });
  }
  // The library may keep timers or sockets alive; the worker is done.
  process.exit(0);
}
