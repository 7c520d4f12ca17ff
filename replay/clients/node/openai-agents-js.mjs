// `openai-agents-js`: @openai/agents-realtime's RealtimeSession over its OpenAIRealtimeWebSocket transport.
//
// The library's: the session.update it builds from the agent, every event it sends, and the barge-in.
// On input_audio_buffer.speech_started the transport calls its own interrupt(): a
// conversation.item.truncate at the wall time since the first audio delta, clamped to the audio it
// received (nothing before the first delta, nothing when the audio is done and fully played), and
// response.cancel first only when the server session's interrupt_response is off.
//
// The driver's: an app around the session. The agent takes the recorded instructions and, for each
// recorded function tool, a stand-in whose result is the recorded function_call_output (the library then
// sends that output and asks for the next response itself, so those turns are not replayed). The user's
// typed turns go through session.sendMessage(); a turn without user text is a plain response.create.
// Turn N>1 waits for the previous response.done and a gap, as the Python drivers do; none is sent after
// the barge-in. The `audio` events are played on a real-time clock, stopped on `audio_interrupted`.

import {
  PCM_BYTES_PER_MS,
  PlaybackClock,
  Signal,
  bounded,
  note,
  recordedSession,
  recordedTurns,
  runDriver,
  turnMayStart,
  userTexts,
  CLOSE_TIMEOUT_MS,
} from './common.mjs';

const CONNECT_TIMEOUT_MS = 10_000;

/** Stand-ins for the recorded app's function tools: each call returns the next recorded output. */
function standInTools(tool, script) {
  const outputs = script
    .filter((event) => event.type === 'conversation.item.create' && event.item?.type === 'function_call_output')
    .map((event) => String(event.item.output ?? ''));
  const declared = (recordedSession(script).tools ?? []).filter((t) => t.type === 'function' && t.name);
  return declared.map((declaration) =>
    tool({
      name: declaration.name,
      description: declaration.description ?? '',
      parameters: declaration.parameters ?? { type: 'object', properties: {}, additionalProperties: true },
      strict: false,
      execute: async () => {
        note(`tool ${declaration.name} called: returns the recorded output`);
        return outputs.shift() ?? '';
      },
    }),
  );
}

/** True when every item of the turn is a function_call_output: the library's tool call answers it. */
function answeredByTool(turn) {
  return turn.items.length > 0 && turn.items.every((event) => event.item?.type === 'function_call_output');
}

await runDriver({
  packages: ['@openai/agents-realtime'],
  modules: ['@openai/agents-realtime'],
  async drive({ target, stop }, { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool }) {
    const script = target.client_script;
    const recorded = recordedSession(script);
    const agent = new RealtimeAgent({
      name: 'rtreplay',
      instructions: recorded.instructions ?? 'You are a helpful assistant.',
      tools: standInTools(tool, script),
    });
    const session = new RealtimeSession(agent, { transport: new OpenAIRealtimeWebSocket(), model: target.model });
    const idle = new Signal(true); // no response requested or running
    const bargeIn = new Signal();
    const gone = new Signal();
    let player = new PlaybackClock();

    session.on('transport_event', (event) => {
      if (event.type === 'response.created') idle.clear();
      else if (event.type === 'response.done') idle.set();
      else if (event.type === 'input_audio_buffer.speech_started') {
        bargeIn.set();
        note(`speech_started received (the app has played ${player.playedMs()} ms)`);
      } else if (event.type === 'error') note(`server error: ${JSON.stringify(event.error)}`);
    });
    session.on('audio', (event) => player.add(event.data.byteLength / PCM_BYTES_PER_MS));
    session.on('audio_interrupted', () => {
      note(`audio_interrupted: playback stopped at ${player.playedMs()} ms`);
      player = new PlaybackClock();
    });
    session.on('error', (event) => note(`error event: ${event?.error?.message ?? JSON.stringify(event?.error)}`));
    session.transport.on('connection_change', (status) => {
      if (status === 'disconnected') gone.set();
    });

    let timer;
    await Promise.race([
      session.connect({ apiKey: target.api_key, url: target.ws_url }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));

    const playTurns = async () => {
      for (const [index, turn] of recordedTurns(script).entries()) {
        if (answeredByTool(turn)) continue;
        if (index > 0 && !(await turnMayStart(idle, bargeIn))) return;
        if (bargeIn.isSet || gone.isSet) return;
        idle.clear();
        const texts = userTexts(turn);
        if (texts.length > 0) session.sendMessage(texts.join('\n'));
        else session.transport.sendEvent({ type: 'response.create' });
      }
    };
    playTurns().catch((error) => note(`sending the turns failed: ${error?.message ?? error}`));

    await Promise.race([stop.wait(), gone.wait()]);
    if (!stop.isSet) note('the connection closed before stop');
    await bounded(Promise.resolve().then(() => session.close()), CLOSE_TIMEOUT_MS, 'session.close()');
  },
});
