// `livekit-node`: @livekit/agents-plugin-openai's realtime RealtimeSession, headless, called the way
// @livekit/agents' AgentActivity calls it (dist/voice/agent_activity.js).
//
// The library's: the session (its session.update, response.create with metadata, the event handling, the
// remote chat context) and what interrupt(), truncate() and updateChatCtx() send.
//
// The driver's: AgentActivity's part, with a real-time player instead of a room. One generateReply() per
// recorded response.create (the recorded user items are not sent: as in the Python livekit driver, an
// update_chat_ctx() of them waits for acks carrying livekit's own item ids). On the session's
// input_speech_started it does what onInputSpeechStarted → interrupt() and the end of
// realtimeGenerationTaskImpl do for the agent's current speech (a generation whose audio has not finished
// playing):
//   1. session.interrupt() at once (response.cancel while a response is in flight);
//   2. for each message of the generation, in order, once its modalities are known: "partial" if its
//      first audio frame reached the player (truncate() at the player's position, floor ms), "full" if it
//      has played to the end, "skipped" otherwise; messages after the first partial one are not looked at;
//   3. truncate() for the partial message, then, if a message was skipped, updateChatCtx() with the
//      agent's context: the session's chat context without the skipped messages (the agent never added
//      them), so the library deletes those the server holds.
// The player is fed from openai_server_event_received, in wire order: the message streams are read by
// tasks that lag a burst of frames, and a frame sent just before speech_started would be missed.

import {
  PCM_BYTES_PER_MS,
  PlaybackClock,
  Signal,
  bounded,
  note,
  recordedTurns,
  runDriver,
  sleep,
  turnMayStart,
  CLOSE_TIMEOUT_MS,
} from './common.mjs';

const MODALITIES_TIMEOUT_MS = 2_000; // content_part.added, or the cancel tail, settles them
const MESSAGE_TIMEOUT_MS = 1_000; // for the message stream to hand over a message the wire announced
const UPDATE_TIMEOUT_MS = 6_000; // updateChatCtx() gives up after 5 s by itself

/** One generation (response) as the agent's speech sees it. */
class Speech {
  messages = new Map(); // item id → { clock, done, msg, text }
  responseDone = false;

  message(itemId) {
    if (!this.messages.has(itemId)) {
      this.messages.set(itemId, { clock: new PlaybackClock(), done: false, msg: null, text: '' });
    }
    return this.messages.get(itemId);
  }

  /** Still speaking at `at`: the response runs, or some message's audio has not played to its end. */
  playing(at) {
    if (!this.responseDone) return true;
    return [...this.messages.values()].some((m) => m.clock.firstAt !== null && !m.clock.finished(m.done, at));
  }
}

async function waitFor(get, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  while (get() === null && performance.now() < deadline) await sleep(5);
  return get();
}

async function modalitiesOf(msg) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), MODALITIES_TIMEOUT_MS);
  });
  try {
    return await Promise.race([msg.modalities, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The end of realtimeGenerationTaskImpl after an interruption: truncate the partial message, drop skipped ones. */
async function finishInterrupted(session, speech, at) {
  const skipped = [];
  for (const [itemId, out] of speech.messages) {
    const msg = await waitFor(() => out.msg, MESSAGE_TIMEOUT_MS);
    if (msg === null) {
      note(`${itemId}: never came out of the message stream`);
      break;
    }
    let modalities = await modalitiesOf(msg);
    if (modalities === null) {
      modalities = ['audio', 'text'];
      note(`${itemId}: modalities unresolved, taking ${JSON.stringify(modalities)}`);
    }
    if (out.clock.firstAt === null) {
      note(`${itemId}: skipped (no audio frame reached the player)`);
      skipped.push(itemId);
      continue;
    }
    if (out.clock.finished(out.done, at)) {
      note(`${itemId}: played in full (${out.clock.playedMs(at)} ms)`);
      continue;
    }
    const audioEndMs = out.clock.playedMs(at);
    note(`truncate({messageId: ${itemId}, audioEndMs: ${audioEndMs}, modalities: ${JSON.stringify(modalities)}}) ` +
      `[received ${Math.round(out.clock.receivedMs)} ms]`);
    session
      .truncate({ messageId: itemId, audioEndMs, modalities, audioTranscript: out.text })
      .catch((error) => note(`truncate() failed: ${error?.message ?? error}`));
    break;
  }
  if (skipped.length > 0) {
    const agentCtx = session.chatCtx.copy();
    agentCtx.items = agentCtx.items.filter((item) => !skipped.includes(item.id));
    note(`updateChatCtx() without the skipped ${skipped.join(', ')}`);
    await bounded(session.updateChatCtx(agentCtx), UPDATE_TIMEOUT_MS, 'updateChatCtx()');
  }
}

await runDriver({
  packages: ['@livekit/agents-plugin-openai', '@livekit/agents'],
  modules: ['@livekit/agents', '@livekit/agents-plugin-openai'],
  async drive({ target, stop }, agents, { realtime }) {
    agents.initializeLogger({ pretty: false, level: 'debug' });
    const model = new realtime.RealtimeModel({
      apiKey: target.api_key,
      baseURL: target.http_base_url,
      model: target.model,
      // one connection per case: a reconnection would open a second session on the replay server
      connOptions: { ...agents.DEFAULT_API_CONNECT_OPTIONS, maxRetry: 0 },
    });
    const session = model.session();
    const idle = new Signal(true); // no response requested or running
    const bargeIn = new Signal();
    const gone = new Signal();
    const speeches = new Map(); // response id → Speech
    let current = null; // the latest generation

    session.on('openai_server_event_received', (event) => {
      // emitted before the session handles the event: the player and the pacing see wire order
      const speech = speeches.get(event.response_id) ?? current;
      switch (event.type) {
        case 'response.created':
          idle.clear();
          current = new Speech();
          speeches.set(event.response?.id, current);
          break;
        case 'response.done': {
          idle.set();
          const done = speeches.get(event.response?.id) ?? current;
          if (done) done.responseDone = true;
          break;
        }
        case 'response.output_item.added':
          if (speech && event.item?.type === 'message') speech.message(String(event.item.id));
          break;
        case 'response.output_audio.delta':
          speech?.message(String(event.item_id)).clock.add(Buffer.from(event.delta ?? '', 'base64').length / PCM_BYTES_PER_MS);
          break;
        case 'response.output_audio_transcript.delta':
        case 'response.output_text.delta':
          if (speech) speech.message(String(event.item_id)).text += event.delta ?? '';
          break;
        case 'response.output_item.done': // no more audio for this message
          if (speech && event.item?.type === 'message') speech.message(String(event.item.id)).done = true;
          break;
        case 'error':
          note(`server error: ${JSON.stringify(event.error)}`);
          break;
        default:
          break;
      }
    });
    session.on('generation_created', (generation) => {
      const speech = speeches.get(generation.responseId) ?? current;
      (async () => {
        for await (const msg of generation.messageStream) {
          if (speech) speech.message(msg.messageId).msg = msg;
          (async () => {
            for await (const _ of msg.audioStream); // the player reads the frames; it is fed in wire order
          })().catch(() => {});
          (async () => {
            for await (const _ of msg.textStream);
          })().catch(() => {});
        }
      })().catch((error) => note(`reading the generation failed: ${error?.message ?? error}`));
    });
    session.on('input_speech_started', () => {
      const at = performance.now();
      bargeIn.set();
      note(`input_speech_started: interrupt() (response in flight: ${session.hasInflightResponse()})`);
      session.interrupt().catch((error) => note(`interrupt() failed: ${error?.message ?? error}`));
      if (current === null || !current.playing(at)) {
        note('no agent speech playing: nothing to truncate');
        return;
      }
      finishInterrupted(session, current, at).catch((error) => note(`after the interruption: ${error?.stack ?? error}`));
    });
    session.on('session_reconnected', () => note('the session reconnected (the server had closed it)'));
    session.on('error', (event) => {
      note(`library error event: ${event?.error?.message ?? event?.error ?? event} (recoverable: ${event?.recoverable})`);
      if (event?.recoverable === false) gone.set();
    });

    const playTurns = async () => {
      for (const [index] of recordedTurns(target.client_script).entries()) {
        if (index > 0 && !(await turnMayStart(idle, bargeIn))) return;
        if (bargeIn.isSet || gone.isSet) return;
        idle.clear();
        session.generateReply().catch((error) => note(`generateReply() failed: ${error?.message ?? error}`));
      }
    };
    playTurns().catch((error) => note(`sending the turns failed: ${error?.message ?? error}`));

    await Promise.race([stop.wait(), gone.wait()]);
    if (!stop.isSet) note('the session ended before stop');
    await bounded(session.close(), CLOSE_TIMEOUT_MS, 'session.close()');
  },
});
