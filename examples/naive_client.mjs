// A browser-style voice client for `rtreplay check --cmd`, in JavaScript. It authenticates with
// subprotocols (no headers, as in a browser), streams its microphone (here: silence) for as long as the
// connection is open and never types a user turn: the server hears the user and answers. It plays the
// assistant's audio on a real-time clock, answers function calls, and has the bug this tool exists to
// catch: on barge-in it truncates the assistant item at the played ms, even at 0 ms. FIXED=1 applies
// the livekit/agents PR #6249 logic instead.
//
//   rtreplay check --cmd "node --experimental-websocket examples/naive_client.mjs"   # Node 20; plain `node` on 22+
const fixed = process.env.FIXED === "1";
const protocols = ["realtime", `openai-insecure-api-key.${process.env.OPENAI_API_KEY}`];
if (process.env.RTREPLAY_DIALECT === "beta") protocols.push("openai-beta.realtime-v1");
const BYTES_PER_MS = 48; // pcm16, 24 kHz, mono: the session's default audio format, both ways
const CHUNK_MS = 20;
const SILENCE = Buffer.alloc(BYTES_PER_MS * CHUNK_MS).toString("base64");

const ws = new WebSocket(process.env.RTREPLAY_WS_URL, protocols);
const send = (event) => ws.send(JSON.stringify(event));

// The microphone: 20 ms of audio per 20 ms of real time, however late the timer fires.
let microphone;
ws.onopen = () => {
  const start = performance.now();
  let sent = 0;
  microphone = setInterval(() => {
    for (; sent * CHUNK_MS <= performance.now() - start; sent++) send({ type: "input_audio_buffer.append", audio: SILENCE });
  }, CHUNK_MS);
};
ws.onclose = () => clearInterval(microphone); // the server hung up: the conversation is over

// The assistant item being played: audio plays in real time from when it arrives, as on a speaker.
const newItem = (itemId = null, kind = null) => ({ itemId, kind, receivedMs: 0, endsAt: 0 });
const playedMs = (p) => Math.floor(p.receivedMs - Math.max(0, p.endsAt - performance.now()));
let playing = newItem(), modalities = ["audio"];
const held = new Set();

function onInterrupt() {
  if (playing.itemId === null) return [];
  const played = Math.max(0, playedMs(playing));
  const truncate = { type: "conversation.item.truncate", item_id: playing.itemId, content_index: 0, audio_end_ms: played };
  if (!fixed) return [truncate]; // naive: even at 0 ms, even for a text item or a function call
  if (playing.kind !== "audio") return []; // only model audio can be truncated
  if (played > 0) return [{ ...truncate, audio_end_ms: Math.min(played, Math.floor(playing.receivedMs)) }];
  if (held.has(playing.itemId)) return [{ type: "conversation.item.delete", item_id: playing.itemId }]; // nobody heard it
  return []; // the server does not hold the item yet: nothing to undo
}

function answerFunctionCalls(response) {
  const calls = (response.output ?? []).filter((item) => item.type === "function_call");
  if (response.status !== "completed" || calls.length === 0) return [];
  return [...calls.map((call) => ({ type: "conversation.item.create",
                                    item: { type: "function_call_output", call_id: call.call_id, output: '{"ok": true}' } })),
          { type: "response.create" }];
}

ws.onmessage = ({ data }) => {
  const event = JSON.parse(data);
  let sends = [];
  switch (event.type) {
    case "response.created":
      modalities = event.response.output_modalities ?? event.response.modalities ?? ["audio"];
      playing = newItem();
      break;
    case "response.output_item.added":
      playing = newItem(event.item.id, event.item.type === "function_call" ? "function_call"
                                       : modalities.includes("audio") ? "audio" : "text");
      break;
    case "response.content_part.added":
      if (event.item_id === playing.itemId) playing.kind = event.part.type === "audio" ? "audio" : "text";
      break;
    case "conversation.item.added":
    case "conversation.item.created":
      held.add(event.item.id);
      break;
    case "conversation.item.deleted":
      held.delete(event.item_id);
      break;
    case "response.output_audio.delta":
    case "response.audio.delta": {
      if (event.item_id !== playing.itemId) playing = newItem(event.item_id, "audio");
      const ms = Buffer.from(event.delta, "base64").length / BYTES_PER_MS;
      playing.endsAt = Math.max(playing.endsAt, performance.now()) + ms;
      playing.receivedMs += ms;
      break;
    }
    case "input_audio_buffer.speech_started":
      sends = onInterrupt();
      break;
    case "response.done":
      sends = answerFunctionCalls(event.response);
      break;
    case "error":
      console.log("server error:", event.error.message);
  }
  sends.forEach(send);
};
