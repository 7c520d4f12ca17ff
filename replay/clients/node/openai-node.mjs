// `openai-node`: the openai npm package's OpenAIRealtimeWS (GA, `openai/realtime/ws`) or its beta
// counterpart (`openai/beta/realtime/ws`), with the barge-in rule its documentation leaves to the app:
// the one of livekit PR #6249, as replay/clients/openai_sdk.py applies it to the Python SDK.
//
// The library's: the URL (OpenAI({baseURL}) → /realtime?model=…), the handshake headers, the socket and
// the typed event stream. The driver's: replaying the recorded setup (session.update,
// conversation.item.create, response.create) with the same pacing as the Python drivers, a playback clock
// fed in wire order, and the rule on input_audio_buffer.speech_started:
//   - no assistant item, a text item, or audio already fully played: nothing;
//   - some audio played: conversation.item.truncate at min(played, received) ms;
//   - nothing played: conversation.item.delete if the server announced the item, else nothing;
//   - then response.cancel, only when the session's interrupt_response is not true and a response runs.
//
// The library always asks for wss: (buildRealtimeURL sets the protocol); the replay server speaks plain
// ws: on loopback, so the driver hands ws a plain TCP `createConnection` through the library's own
// `options` (the ws client settings). Nothing else of the library is replaced.

import { connect } from 'node:net';
import {
  PlaybackClock,
  Signal,
  note,
  runDriver,
  turnMayStart,
  CLOSE_TIMEOUT_MS,
} from './common.mjs';

const REPLAYED = new Set(['session.update', 'conversation.item.create', 'response.create']);
const ITEM_ADDED = new Set(['conversation.item.added', 'conversation.item.created']);
const AUDIO_DELTAS = new Set(['response.output_audio.delta', 'response.audio.delta']);
const BYTES_PER_MS = { pcm16: 48, g711_ulaw: 8, g711_alaw: 8, 'audio/pcm': 48, 'audio/pcmu': 8, 'audio/pcma': 8 };
const CONNECT_TIMEOUT_MS = 10_000;
const SESSION_TIMEOUT_MS = 5_000; // session.created after connect, session.updated after session.update

function bytesPerMs(format) {
  const name = typeof format === 'object' && format !== null ? format.type : format;
  return BYTES_PER_MS[name] ?? 48;
}

/** What the app has learned from the server so far. */
class State {
  sessionCreated = new Signal();
  sessionUpdated = new Signal();
  idle = new Signal(true); // no response requested or running
  bargeIn = new Signal();
  gone = new Signal(); // the socket closed
  interruptResponse = true;
  bytesPerMs = 48;
  audioOut = true; // the session's output modalities include audio
  knownItems = new Set(); // announced by conversation.item.added/created
  itemId = null; // the assistant item being played
  itemAudio = true;
  contentIndex = 0;
  itemDone = false;
  clock = new PlaybackClock();

  readSession(session = {}) {
    const audio = session.audio ?? {};
    const ga = Object.keys(audio).length > 0;
    const format = ga ? audio.output?.format : session.output_audio_format;
    const turnDetection = ga ? audio.input?.turn_detection : session.turn_detection;
    if (format !== undefined && format !== null) this.bytesPerMs = bytesPerMs(format);
    const modalities = session.output_modalities ?? session.modalities;
    if (Array.isArray(modalities)) this.audioOut = modalities.includes('audio');
    if (turnDetection && typeof turnDetection === 'object') {
      this.interruptResponse = turnDetection.interrupt_response !== false;
    }
  }

  startItem(itemId) {
    Object.assign(this, { itemId, contentIndex: 0, itemDone: false, clock: new PlaybackClock() });
    this.itemAudio = this.audioOut;
  }
}

function track(state, event, rt) {
  switch (event.type) {
    case 'session.created':
    case 'session.updated':
      state.readSession(event.session);
      (event.type === 'session.created' ? state.sessionCreated : state.sessionUpdated).set();
      break;
    case 'conversation.item.added':
    case 'conversation.item.created':
      state.knownItems.add(String(event.item?.id));
      break;
    case 'conversation.item.deleted':
      state.knownItems.delete(event.item_id);
      break;
    case 'response.created':
      state.idle.clear();
      break;
    case 'response.done':
      state.idle.set();
      break;
    case 'response.output_item.added':
      if (event.item?.type === 'message' && event.item?.role === 'assistant') state.startItem(String(event.item.id));
      break;
    case 'response.content_part.added':
      if (event.item_id === state.itemId) {
        state.contentIndex = event.content_index ?? 0;
        state.itemAudio = ['audio', 'output_audio'].includes(event.part?.type);
      }
      break;
    case 'response.output_item.done':
      if (event.item?.id === state.itemId) state.itemDone = true;
      break;
    case 'input_audio_buffer.speech_started':
      state.bargeIn.set();
      bargeIn(state, rt);
      break;
    default:
      if (AUDIO_DELTAS.has(event.type)) {
        if (event.item_id !== state.itemId) state.startItem(String(event.item_id));
        state.itemAudio = true;
        state.clock.add(Buffer.from(event.delta ?? '', 'base64').length / state.bytesPerMs);
      }
  }
}

/** Stop playback and tell the server what was heard (PR #6249 rule). */
function bargeIn(state, rt) {
  const played = state.clock.playedMs();
  const received = state.clock.receivedMs;
  const item = state.itemId;
  if (item === null) {
    note('speech_started: no assistant item, nothing to truncate');
  } else if (!state.itemAudio) {
    note(`speech_started: ${item} is text, nothing to truncate`);
  } else if (state.clock.finished(state.itemDone)) {
    note(`speech_started: ${item} fully played (${played} ms), nothing to truncate`);
  } else if (played > 0) {
    const audioEndMs = Math.min(played, Math.floor(received));
    note(`speech_started: truncate ${item} at ${audioEndMs} ms (received ${Math.round(received)})`);
    rt.send({
      type: 'conversation.item.truncate',
      item_id: item,
      content_index: state.contentIndex,
      audio_end_ms: audioEndMs,
    });
  } else if (state.knownItems.has(item)) {
    note(`speech_started: nothing played, delete ${item}`);
    rt.send({ type: 'conversation.item.delete', item_id: item });
  } else {
    note(`speech_started: nothing played and ${item} not announced, nothing sent`);
  }
  if (!state.interruptResponse && !state.idle.isSet) {
    note('interrupt_response is off: response.cancel');
    rt.send({ type: 'response.cancel' });
  }
}

/** The recorded setup and turns in order, each once the server is ready for it; none after the barge-in. */
async function replay(state, rt, script) {
  await state.sessionCreated.wait(SESSION_TIMEOUT_MS);
  let turnOpen = true; // false once a response.create went out: the next item or response starts a turn
  for (const event of script) {
    if (!REPLAYED.has(event.type)) continue;
    if (event.type !== 'session.update' && !turnOpen) {
      if (!(await turnMayStart(state.idle, state.bargeIn))) return;
      turnOpen = true;
    }
    if (state.bargeIn.isSet || state.gone.isSet) return;
    if (event.type === 'response.create') {
      state.idle.clear();
      turnOpen = false;
    }
    if (event.type === 'session.update') state.sessionUpdated.clear();
    rt.send(event);
    if (event.type === 'session.update' && !(await state.sessionUpdated.wait(SESSION_TIMEOUT_MS))) {
      note('no session.updated for a replayed session.update');
    }
  }
}

await runDriver({
  packages: ['openai'],
  modules: ['openai', 'openai/realtime/ws', 'openai/beta/realtime/ws'],
  async drive({ target, stop }, { OpenAI }, ga, beta) {
    const { OpenAIRealtimeWS } = target.dialect === 'beta' ? beta : ga;
    const client = new OpenAI({ apiKey: target.api_key, baseURL: target.http_base_url });
    // wss: is forced by the library; the replay server is plain ws: on loopback.
    const createConnection = (options) => connect({ host: options.host, port: options.port });
    const rt = new OpenAIRealtimeWS({ model: target.model, options: { createConnection } }, client);
    const state = new State();
    rt.on('error', (error) => note(`library error event: ${error?.message ?? error}`));
    rt.on('event', (event) => {
      if (event.type === 'error') note(`server error: ${JSON.stringify(event.error)}`);
      track(state, event, rt);
    });
    const opened = new Signal();
    rt.socket.on('open', () => opened.set());
    rt.socket.on('close', () => state.gone.set());
    const ready = await Promise.race([opened.wait(CONNECT_TIMEOUT_MS), state.gone.wait()]);
    if (!ready || !opened.isSet) throw new Error(`could not connect to ${rt.url}`);
    replay(state, rt, target.client_script).catch((error) => note(`replay failed: ${error}`));
    await Promise.race([stop.wait(), state.gone.wait()]);
    if (!stop.isSet) note('the connection closed before stop');
    rt.close();
    await state.gone.wait(CLOSE_TIMEOUT_MS);
  },
});
